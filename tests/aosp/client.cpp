/*
 * An lmkd client built only on AOSP's liblmkd_utils (vendored unchanged in this folder), as
 * an Android app manager would use it: lowmemd's AOSP compatibility test
 * (tests/lmkd_aosp.rs) drives it. Our own code (Apache-2.0, as lowmemd).
 *
 * It connects with lmkd_connect() (the reserved socket "lmkd": see shim/cutils/sockets.h
 * for where that is), then reads one command per line on stdin and prints one line per
 * command on stdout, flushed:
 *
 *   register PID UID ADJ [service]    lmkd_register_proc          -> "register R"
 *   register_procs PID UID ADJ ...    lmkd_register_procs (1..3)  -> "register_procs R"
 *   unregister PID                    lmkd_unregister_proc        -> "unregister R"
 *   update_props                      lmkd_update_props           -> "update_props NAME"
 *   boot_completed                    lmkd_notify_boot_completed  -> "boot_completed NAME"
 *   kill_count MIN MAX                lmkd_get_kill_count         -> "kill_count RET HOST"
 *
 * R is the function's return value (0 or -1). lmkd_get_kill_count() returns the reply's
 * second word as it came off the wire, in network byte order (lmkd sends it through
 * htonl() and liblmkd_utils never converts it back): RET is that value, HOST is ntohl(RET),
 * the count itself. Errors go to stderr with errno's text; the exit code is 1 when
 * lmkd_connect() failed or a line was not understood, 0 at the end of stdin.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <liblmkd_utils.h>

static const char* update_props_name(enum update_props_result r) {
    switch (r) {
        case UPDATE_PROPS_SUCCESS: return "success";
        case UPDATE_PROPS_FAIL: return "fail";
        case UPDATE_PROPS_SEND_ERR: return "send_err";
        case UPDATE_PROPS_RECV_ERR: return "recv_err";
        case UPDATE_PROPS_FORMAT_ERR: return "format_err";
    }
    return "unknown";
}

static const char* boot_completed_name(enum boot_completed_notification_result r) {
    switch (r) {
        case BOOT_COMPLETED_NOTIF_SUCCESS: return "success";
        case BOOT_COMPLETED_NOTIF_FAILS: return "fails";
        case BOOT_COMPLETED_NOTIF_ALREADY_HANDLED: return "already_handled";
        case BOOT_COMPLETED_NOTIF_SEND_ERR: return "send_err";
        case BOOT_COMPLETED_NOTIF_RECV_ERR: return "recv_err";
        case BOOT_COMPLETED_NOTIF_FORMAT_ERR: return "format_err";
    }
    return "unknown";
}

static void say(const std::string& line) {
    std::cout << line << std::endl;
}

static bool bad(const std::string& line, const char* why) {
    std::cerr << "aosp-client: line \"" << line << "\": " << why << std::endl;
    return false;
}

static bool run(int sock, const std::string& line) {
    std::istringstream in(line);
    std::string cmd;
    if (!(in >> cmd)) {
        return true;
    }
    if (cmd == "register" || cmd == "register_procs") {
        struct lmk_procs_prio batch;
        memset(&batch, 0, sizeof(batch));
        int count = 0;
        long pid, uid, adj;
        while (in >> pid >> uid >> adj) {
            if (count == PROCS_PRIO_MAX_RECORD_COUNT) {
                return bad(line, "more than PROCS_PRIO_MAX_RECORD_COUNT processes");
            }
            struct lmk_procprio* p = &batch.procs[count++];
            p->pid = (pid_t)pid;
            p->uid = (uid_t)uid;
            p->oomadj = (int)adj;
            p->ptype = PROC_TYPE_APP;
        }
        in.clear();
        std::string rest;
        if (in >> rest) {
            if (rest != "service" || cmd != "register") {
                return bad(line, "expected PID UID ADJ triples (register: then maybe \"service\")");
            }
            batch.procs[0].ptype = PROC_TYPE_SERVICE;
        }
        if (count == 0 || (cmd == "register" && count != 1)) {
            return bad(line, "expected PID UID ADJ");
        }
        int r = cmd == "register" ? lmkd_register_proc(sock, &batch.procs[0])
                                  : lmkd_register_procs(sock, &batch, count);
        if (r < 0) {
            std::cerr << "aosp-client: " << cmd << ": " << strerror(errno) << std::endl;
        }
        say(cmd + " " + std::to_string(r));
    } else if (cmd == "unregister") {
        long pid;
        if (!(in >> pid)) {
            return bad(line, "expected PID");
        }
        struct lmk_procremove params = {(pid_t)pid};
        int r = lmkd_unregister_proc(sock, &params);
        if (r < 0) {
            std::cerr << "aosp-client: unregister: " << strerror(errno) << std::endl;
        }
        say("unregister " + std::to_string(r));
    } else if (cmd == "update_props") {
        say(std::string("update_props ") + update_props_name(lmkd_update_props(sock)));
    } else if (cmd == "boot_completed") {
        say(std::string("boot_completed ") +
            boot_completed_name(lmkd_notify_boot_completed(sock)));
    } else if (cmd == "kill_count") {
        struct lmk_getkillcnt params;
        if (!(in >> params.min_oomadj >> params.max_oomadj)) {
            return bad(line, "expected MIN MAX");
        }
        int r = lmkd_get_kill_count(sock, &params);
        say("kill_count " + std::to_string(r) + " " + std::to_string((int)ntohl((uint32_t)r)));
    } else {
        return bad(line, "unknown command");
    }
    return true;
}

int main() {
    int sock = lmkd_connect();
    if (sock < 0) {
        std::cerr << "aosp-client: lmkd_connect: " << strerror(errno) << std::endl;
        return 1;
    }
    say("connected");
    std::string line;
    while (std::getline(std::cin, line)) {
        if (!run(sock, line)) {
            return 1;
        }
    }
    close(sock);
    return 0;
}
