/*
 * lowmemd's stand-in for AOSP's <cutils/sockets.h>: only what liblmkd_utils.cpp uses.
 * Our own code (Apache-2.0, as lowmemd), not AOSP's; the names and values are the ones
 * AOSP's header defines, so the unchanged liblmkd_utils.cpp compiles and behaves as on
 * Android.
 */
#ifndef LOWMEMD_SHIM_CUTILS_SOCKETS_H
#define LOWMEMD_SHIM_CUTILS_SOCKETS_H

#include <sys/cdefs.h>
#include <sys/socket.h>

/* Socket namespaces, as AOSP's cutils: abstract, Android's reserved /dev/socket/NAME, and a
 * plain filesystem path. */
#define ANDROID_SOCKET_NAMESPACE_ABSTRACT 0
#define ANDROID_SOCKET_NAMESPACE_RESERVED 1
#define ANDROID_SOCKET_NAMESPACE_FILESYSTEM 2

/* Where the reserved namespace lives on Android. */
#define ANDROID_RESERVED_SOCKET_PREFIX "/dev/socket/"

/* The environment variable that moves the reserved namespace off /dev/socket (a test's
 * temporary directory): the reserved socket NAME is then $LOWMEMD_ANDROID_SOCKET_DIR/NAME. */
#define LOWMEMD_ANDROID_SOCKET_DIR_ENV "LOWMEMD_ANDROID_SOCKET_DIR"

__BEGIN_DECLS

/*
 * Connects a new socket of `type` (SOCK_SEQPACKET | SOCK_CLOEXEC for lmkd) to `name` in
 * the namespace `namespaceId`. Returns the connected fd, or -1 with errno set.
 */
int socket_local_client(const char* name, int namespaceId, int type);

__END_DECLS

#endif
