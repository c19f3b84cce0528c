"""`smki config`: what a configuration file gives each command, and where every value came from."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from smki.cli.common import DatabaseTarget, emit, json_option
from smki.cli.configured import ConfiguredGroup, loaded_configuration, setting_for
from smki.config import CONFIG_ENV, AuthorityKind, Setting
from smki.hsm.pins import PinSource, SourceKind
from smki.store.postgres import is_database_url, redact

COMMAND_LINE = "command line"
DEFAULT = "default"


@click.group("config", cls=ConfiguredGroup)
def config_group() -> None:
    """Configuration files: one per authority (token, key, module, PIN source, state, policy, audit key, defaults).

    Every command takes --config FILE (or $SMKI_CONFIG); an option given on the command line overrides the file.
    """


@config_group.command("show", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
                      reads_configuration=True)
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def show_command(ctx: click.Context, command: tuple[str, ...], as_json: bool) -> None:
    """The effective settings, and where each came from (FILE:LINE, command line, environment, default).

    With COMMAND (e.g. `ca issue-org --requester supplier`): every option of that command as it would
    run, the configuration file's settings under the options given. Without: the file's settings.
    Nothing is run, opened or read but the configuration file.
    """
    loaded = loaded_configuration(ctx)
    if command:
        _show_command(ctx, list(command), as_json)
        return
    if loaded is None:
        raise click.UsageError(f"no configuration file: give --config FILE or set ${CONFIG_ENV} (or name a COMMAND)")
    configuration = loaded.configuration
    data = {"config": str(configuration.path), "named_by": loaded.origin, "kind": configuration.kind, "authority": configuration.authority,
            "settings": [{"setting": str(value.setting), "source": configuration.where(value.setting),
                          "value": redact(value.value) if value.setting is Setting.DATABASE and is_database_url(value.value) else value.value}
                         for value in configuration.values.values()]}
    emit(as_json, data, _settings_text)


def _show_command(ctx: click.Context, words: list[str], as_json: bool) -> None:
    from smki.cli.main import cli

    command, path, args = _resolve(ctx, words, cli)
    # Parsed as it would run, but resiliently: nothing is invoked, and a missing value is shown as missing.
    target = command.make_context(" ".join(path), args, parent=ctx, resilient_parsing=True)
    loaded = loaded_configuration(target)
    used, overridden = set(), set()
    rows = []
    for param in command.params:
        if param.name is None or param.name == "help" or not param.expose_value:
            continue
        setting = setting_for(command, param)
        source = target.get_parameter_source(param.name)
        if source is ParameterSource.DEFAULT_MAP and setting is not None and loaded is not None:
            used.add(setting)
            where = loaded.configuration.where(setting)
        else:
            where = _source_text(source, param)
            if setting is not None:
                overridden.add(setting)
        value = target.params.get(param.name)
        if value is None and source is ParameterSource.COMMANDLINE:
            value = "(refused: see the command's own error)"
        rows.append({"option": _option_text(param), "value": _shown(value, param), "source": where, "setting": str(setting) if setting else None,
                     **({"missing": True} if param.required and value in (None, ()) else {})})
    configuration = loaded.configuration if loaded else None
    data = {"command": "smki " + " ".join(path), "config": str(configuration.path) if configuration else None,
            "named_by": loaded.origin if loaded else None, "options": rows,
            "overridden": _settings_in(configuration, overridden - used), "not_used": _settings_in(configuration, None, used | overridden)}
    emit(as_json, data, _command_text)


def _settings_in(configuration, among: set | None, besides: set = frozenset()) -> list[dict]:
    """The file's settings (those `among`, or all), but those `besides`, with their FILE:LINE."""
    if configuration is None:
        return []
    return [{"setting": str(v.setting), "source": configuration.where(v.setting)} for v in configuration.values.values()
            if (among is None or v.setting in among) and v.setting not in besides]


def _resolve(ctx: click.Context, words: list[str], root: click.Group) -> tuple[click.Command, list[str], list[str]]:
    """The command `words` names (groups walked by name), its path, and the rest of the words (its arguments)."""
    command: click.Command = root
    path: list[str] = []
    while isinstance(command, click.Group):
        if not words or words[0].startswith("-"):
            raise click.UsageError(f"name a command after '{' '.join(['smki', *path])}': {', '.join(command.list_commands(ctx))}")
        name = words.pop(0)
        found = command.get_command(ctx, name)
        if found is None:
            raise click.UsageError(f"no command 'smki {' '.join([*path, name])}' (known here: {', '.join(command.list_commands(ctx))})")
        command, path = found, [*path, name]
    return command, path, words


def _option_text(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return max(param.opts, key=len)


def _source_text(source: ParameterSource | None, param: click.Parameter) -> str:
    if source is ParameterSource.COMMANDLINE:
        return COMMAND_LINE
    if source is ParameterSource.ENVIRONMENT:
        return f"${param.envvar}" if isinstance(param.envvar, str) else "environment"
    if source is ParameterSource.PROMPT:
        return "prompt"
    return DEFAULT


def _shown(value, param: click.Parameter | None = None):
    """A value as it prints: a secret source as its form (env:NAME, fd:N, prompt: never a secret), a database
    URL without its password, paths as text."""
    if param is not None and isinstance(param.type, DatabaseTarget) and is_database_url(value):
        return redact(value)
    if isinstance(value, PinSource):
        kind = SourceKind(value.kind)
        return {SourceKind.PROMPT: "prompt", SourceKind.VALUE: "(a value given)"}.get(kind, f"{kind.value}:{value.where}")
    if isinstance(value, tuple | list):
        return [_shown(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _settings_text(data: dict) -> str:
    lines = [f"configuration {data['config']} (named by {data['named_by']})"]
    lines += [f"  {row['setting']:<22} {row['value']!s:<40} {row['source']}" for row in data["settings"]]
    return "\n".join(lines)


def _command_text(data: dict) -> str:
    named = f"configuration {data['config']} (named by {data['named_by']})" if data["config"] else "no configuration file"
    lines = [f"{data['command']}: {named}"]
    for row in data["options"]:
        value = "(missing: required)" if row.get("missing") else "-" if row["value"] is None else row["value"]
        lines.append(f"  {row['option']:<20} {value!s:<40} {row['source']}")
    if data["overridden"]:
        lines.append("overridden on the command line: " + ", ".join(f"{row['setting']} ({row['source']})" for row in data["overridden"]))
    if data["not_used"]:
        lines.append("not used by this command: " + ", ".join(f"{row['setting']} ({row['source']})" for row in data["not_used"]))
    return "\n".join(lines)


@config_group.command("template")
@click.argument("kind", type=click.Choice([kind.value for kind in AuthorityKind]))
def template_command(kind: str) -> None:
    """Print a commented example configuration file for one kind of authority (issuing-oca, issuing-dca, ...)."""
    from smki.config import template

    click.echo(template(AuthorityKind(kind)), nl=False)
