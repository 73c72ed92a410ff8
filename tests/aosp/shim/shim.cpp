/*
 * The definitions behind lowmemd's shim headers (shim/cutils/sockets.h,
 * shim/processgroup/processgroup.h). Our own code (Apache-2.0, as lowmemd), written for
 * lowmemd's AOSP compatibility test (tests/lmkd_aosp.rs).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cutils/sockets.h>
#include <processgroup/processgroup.h>

int socket_local_client(const char* name, int namespaceId, int type) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t room = sizeof(addr.sun_path);
    socklen_t len;
    int n;
    switch (namespaceId) {
        case ANDROID_SOCKET_NAMESPACE_ABSTRACT:
            /* A leading NUL, then the name (not NUL-terminated). */
            n = snprintf(addr.sun_path + 1, room - 1, "%s", name);
            if (n < 0 || (size_t)n >= room - 1) {
                errno = ENAMETOOLONG;
                return -1;
            }
            len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
            break;
        case ANDROID_SOCKET_NAMESPACE_RESERVED: {
            const char* dir = getenv(LOWMEMD_ANDROID_SOCKET_DIR_ENV);
            if (dir != NULL && dir[0] != '\0') {
                n = snprintf(addr.sun_path, room, "%s/%s", dir, name);
            } else {
                n = snprintf(addr.sun_path, room, "%s%s", ANDROID_RESERVED_SOCKET_PREFIX, name);
            }
            if (n < 0 || (size_t)n >= room) {
                errno = ENAMETOOLONG;
                return -1;
            }
            len = offsetof(struct sockaddr_un, sun_path) + n + 1;
            break;
        }
        case ANDROID_SOCKET_NAMESPACE_FILESYSTEM:
            n = snprintf(addr.sun_path, room, "%s", name);
            if (n < 0 || (size_t)n >= room) {
                errno = ENAMETOOLONG;
                return -1;
            }
            len = offsetof(struct sockaddr_un, sun_path) + n + 1;
            break;
        default:
            errno = EINVAL;
            return -1;
    }
    int fd = socket(AF_LOCAL, type, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr*)&addr, len) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int createProcessGroup(uid_t, pid_t, bool) {
    errno = ENOSYS;
    return -1;
}
