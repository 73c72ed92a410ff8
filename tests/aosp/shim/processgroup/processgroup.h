/*
 * lowmemd's stand-in for AOSP's <processgroup/processgroup.h>: only the declaration
 * liblmkd_utils.cpp's create_memcg() calls. Our own code (Apache-2.0, as lowmemd).
 */
#ifndef LOWMEMD_SHIM_PROCESSGROUP_H
#define LOWMEMD_SHIM_PROCESSGROUP_H

#include <sys/types.h>

/* Android puts an app's process into a cgroup of its own here. lowmemd's test client never
 * calls create_memcg(): this one fails with ENOSYS. */
int createProcessGroup(uid_t uid, pid_t initialPid, bool memControl = false);

#endif
