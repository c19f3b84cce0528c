"""`smki serve --config FILE`: the SMKI's online interfaces (smki.web) in worker processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from smki.cli.common import json_option


@click.command("serve")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The service's configuration file (kind: service; `smki config template service` writes an example).")
@json_option
def serve_command(config_path: Path, as_json: bool) -> None:
    """Serve the Issuing Authorities' CSR web services and the SMKI Repository web service.

    Starts `workers` processes (each with its own HSM session) listening on one port, with TLS 1.2+
    and client certificates checked against tls.client_ca (or plain HTTP behind a reverse proxy).
    Every secret (PINs, the API key, a TLS key passphrase) is read once from its source and handed
    to the workers through a pipe. A worker that dies is restarted (logged). Prints the URL once
    every worker listens (--json: {"url": ...} on stdout). SIGTERM or Ctrl-C stops it gracefully:
    requests in flight are answered and the request audit is written, then exit 0.

    Exit 3: a bad configuration file, certificate or key; 4: an HSM, token or PIN problem; 5: the port is in use.
    /health and /metrics need no authentication.
    """
    from smki.web.server import ServiceProcesses
    from smki.web.settings import load_service_settings

    processes = ServiceProcesses(load_service_settings(config_path))
    previous = {signum: signal.signal(signum, processes.request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = processes.start()
        if as_json:
            click.echo(json.dumps({"url": url, "workers": processes.settings.workers}))
        click.echo(f"serving the SMKI on {url} with {processes.settings.workers} worker(s) (Ctrl-C or SIGTERM to stop)", err=True)
        processes.serve()
    finally:
        processes.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
