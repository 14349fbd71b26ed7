"""Watch verbs: tensorboard, notebook. The servers run on the instance's 127.0.0.1 (awsrun.job.watch); these
commands open the SSH tunnel to them, print the local URL on stdout and hold the tunnel until Ctrl-C."""
from __future__ import annotations

import click

from awsrun import ui
from awsrun.cli.context import AppContext

CLUSTER = click.option("--cluster", help="Cluster to use (default: setting `cluster`).")
OPEN = click.option("--open", "open_browser", is_flag=True, help="Also open the URL in a browser.")


def _serve(app: AppContext, cluster: str | None, spec, open_browser: bool) -> int:
    import webbrowser

    from awsrun.job import interactive, jobs, watch
    from awsrun.job.projects import project_remote_dir

    settings = app.settings(cluster=cluster)
    workdir = project_remote_dir(settings.remote_dir, app.project_dir)
    with jobs.open_host(app.home, settings) as host:
        with ui.phase(f"{spec.kind} on cluster {settings.cluster!r}") as phase:
            served = watch.serve(host, spec, workdir, settings.pip_args, progress=phase.update)
        if host.local:
            argv = None
            local_port = served.remote_port
        else:
            local_port = watch.free_local_port(served.remote_port)
            argv = interactive.tunnel_argv(host, [(local_port, served.remote_port)])
    stop_hint = f"`awsrun kill {spec.session}` stops it"
    if argv is None:
        ui.say(f"{spec.kind} runs on this machine (cluster {settings.cluster!r}), on 127.0.0.1 only; {stop_hint}")
        ui.out(served.url(local_port))
        if open_browser:
            webbrowser.open(served.url(local_port))
        return 0
    if local_port != served.remote_port:
        ui.say(f"port {served.remote_port} is taken here: using {local_port} instead")
    tunnel = watch.open_tunnel(argv, local_port)
    try:
        ui.say(f"tunnel: 127.0.0.1:{local_port} here -> 127.0.0.1:{served.remote_port} on cluster "
               f"{settings.cluster!r} (Ctrl-C closes the tunnel; {spec.kind} keeps running, {stop_hint})")
        ui.out(served.url(local_port))
        if open_browser:
            webbrowser.open(served.url(local_port))
        code = tunnel.wait()
    except KeyboardInterrupt:
        watch.close_tunnel(tunnel)
        ui.say(f"tunnel closed; {spec.kind} keeps running on cluster {settings.cluster!r} ({stop_hint})")
        return 0
    finally:
        watch.close_tunnel(tunnel)
    ui.say(f"error: the tunnel closed: ssh exited {code}; `awsrun {spec.kind}` opens it again")
    return 1


@click.command("tensorboard")
@CLUSTER
@click.option("--logdir", default="runs", show_default=True,
              help="Directory of event files, relative to the synced project (or absolute).")
@click.option("--port", type=int, default=6006, show_default=True,
              help="Port on the instance; here too when free, else the next free one.")
@OPEN
@click.pass_obj
def tensorboard_command(app: AppContext, cluster: str | None, logdir: str, port: int, open_browser: bool) -> int:
    """TensorBoard on the instance's 127.0.0.1, through an SSH tunnel: prints the local URL.

    Installs tensorboard into the venv when missing, runs it as job `tensorboard` (reused when it is
    already running). Ctrl-C closes the tunnel only: `awsrun kill tensorboard` stops the server."""
    from awsrun.job import watch

    return _serve(app, cluster, watch.tensorboard_spec(port, logdir), open_browser)


@click.command("notebook")
@CLUSTER
@click.option("--port", type=int, default=8888, show_default=True,
              help="Port on the instance; here too when free, else the next free one.")
@OPEN
@click.pass_obj
def notebook_command(app: AppContext, cluster: str | None, port: int, open_browser: bool) -> int:
    """Jupyter Lab on the instance's 127.0.0.1, rooted at the synced project, through an SSH tunnel:
    prints the local URL with its token.

    Installs jupyterlab into the venv when missing, runs it as job `notebook` (reused when it is already
    running). Ctrl-C closes the tunnel only: `awsrun kill notebook` stops the server."""
    from awsrun.job import watch

    return _serve(app, cluster, watch.notebook_spec(port), open_browser)


COMMANDS: list = [tensorboard_command, notebook_command]
