"""Starting the daemon program through supervisord's own XML-RPC interface (no shelling out)."""
from __future__ import annotations

import xmlrpc.client
from typing import Any

from django.conf import settings
from django.db.models.functions import Now
from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

from trading.models import ControlCommand

DAEMON_PROGRAM = "daemon"


class _TimedUnixConnection(UnixStreamHTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)


class _TimedTransport(SupervisorTransport):
    """supervisord's transport, with a timeout: a stuck supervisord must not hang a web request."""

    def __init__(self, serverurl: str, timeout_s: float) -> None:
        super().__init__(None, None, serverurl=serverurl)
        if serverurl.startswith("unix://"):
            def get_connection() -> Any:
                conn = _TimedUnixConnection("localhost", timeout=timeout_s)
                conn.socketfile = serverurl[len("unix://"):]
                return conn
        else:
            http = self._get_connection

            def get_connection() -> Any:
                conn = http()
                conn.timeout = timeout_s
                return conn

        self._get_connection = get_connection


def supervisor_proxy() -> Any:
    url = settings.BIFROST_SUPERVISOR_URL
    transport = _TimedTransport(url, settings.BIFROST_SUPERVISOR_TIMEOUT_S)
    # The host part is ignored for unix sockets; supervisor's transport connects to `serverurl` itself.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def daemon_program_state() -> str:
    """RUNNING, STOPPED, FATAL, ... or UNREACHABLE when supervisord does not answer."""
    try:
        return str(supervisor_proxy().supervisor.getProcessInfo(DAEMON_PROGRAM)["statename"])
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return "UNREACHABLE"


def daemon_start(*, command: ControlCommand) -> ControlCommand:
    """Carry out a `start` command: ask supervisord to start `daemon` and wait until it is RUNNING."""
    from trading.services import control_command_finish, operation_log

    ControlCommand.objects.filter(pk=command.pk).update(state=ControlCommand.State.ACKED, acked_at=Now())
    try:
        supervisor_proxy().supervisor.startProcess(DAEMON_PROGRAM, True)
        state, result = ControlCommand.State.DONE, "daemon program is RUNNING"
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == Faults.ALREADY_STARTED:
            state, result = ControlCommand.State.DONE, "daemon program was already running"
        else:
            state, result = ControlCommand.State.REJECTED, f"supervisord refused: {fault.faultString}"
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        state, result = ControlCommand.State.REJECTED, (
            f"supervisord is not reachable at {settings.BIFROST_SUPERVISOR_URL}: {exc}")
    control_command_finish(command_id=command.pk, state=state, result=result)
    operation_log(kind="command_" + state, actor=command.created_by, message=f"start #{command.pk}: {result}",
                  data={"command_id": command.pk})
    command.refresh_from_db()
    return command
