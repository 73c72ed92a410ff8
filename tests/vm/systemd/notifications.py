# notifications.py LOG: the desktop's notification server, reduced to a log: owns
# org.freedesktop.Notifications on the session bus it is started on and appends one line
# per Notify call to LOG (app name, summary, body, tab-separated), after a "ready" line once
# the name is its own. What the notify-desktop hook's notify-send reaches in the systemd VM
# (tests/vm/systemd/session.sh).
import sys

from gi.repository import Gio, GLib

XML = """<node><interface name="org.freedesktop.Notifications">
<method name="Notify">
 <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
 <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
 <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/>
</method>
<method name="GetCapabilities"><arg type="as" direction="out"/></method>
<method name="GetServerInformation">
 <arg type="s" direction="out"/><arg type="s" direction="out"/>
 <arg type="s" direction="out"/><arg type="s" direction="out"/>
</method>
<method name="CloseNotification"><arg type="u" direction="in"/></method>
</interface></node>"""

log = open(sys.argv[1], "a", buffering=1)
count = 0


def call(conn, sender, path, iface, method, params, invocation):
    global count
    if method == "Notify":
        app, _, _, summary, body = params.unpack()[:5]
        count += 1
        log.write("\t".join(("notify", app, summary, body)) + "\n")
        invocation.return_value(GLib.Variant("(u)", (count,)))
    elif method == "GetCapabilities":
        invocation.return_value(GLib.Variant("(as)", (["body"],)))
    elif method == "GetServerInformation":
        invocation.return_value(GLib.Variant("(ssss)", ("vm-notifications", "lowmemd", "1", "1.2")))
    else:
        invocation.return_value(None)


def acquired(conn, name):
    log.write("ready\n")


def bus_up(conn, name):
    node = Gio.DBusNodeInfo.new_for_xml(XML)
    conn.register_object("/org/freedesktop/Notifications", node.interfaces[0], call)


Gio.bus_own_name(Gio.BusType.SESSION, "org.freedesktop.Notifications",
                 Gio.BusNameOwnerFlags.NONE, bus_up, acquired, lambda *a: sys.exit(1))
GLib.MainLoop().run()
