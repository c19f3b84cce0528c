"""`--config FILE` (or $SMKI_CONFIG) on every command: a configuration file's settings become the
command's option defaults, through click's `default_map`, so a flag on the command line overrides
the file, a required option the file supplies is no longer missing, and `ctx.get_parameter_source()`
says where each value came from (`smki config show` prints it).

Settings are mapped onto options by what the option means, not by its name alone: `--pin-source`
is the signing key's PIN on a command that names a signing key (--token, --key-uri), and the audit
key's PIN on one that names only an audit key (the Librarian's commands, `audit verify`). A setting
a command has no option for is not used by that command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

from smki.config import CONFIG_ENV, AuthorityKind, Configuration, ConfigError, Setting, load_configuration
from smki.errors import BadInputError

CONFIG_PARAM = "config_file"
_META = "smki.configuration"  # ctx.meta (shared by a context and its children): the LoadedConfiguration

# Parameter name -> the setting it takes, for the names that mean one thing on every command.
OPTION_SETTINGS = {
    "module_path": Setting.MODULE,
    "token_label": Setting.TOKEN,
    "token_serial": Setting.TOKEN_SERIAL,
    "key_label": Setting.KEY_LABEL,
    "key_id": Setting.KEY_ID,
    "key_uri": Setting.KEY_URI,
    "state_dir": Setting.STATE,
    "database": Setting.DATABASE,
    "policy_file": Setting.POLICY,
    "environment": Setting.ENVIRONMENT,
    "issuer_cert": Setting.ISSUER_CERTIFICATE,
    "audit_key_uri": Setting.AUDIT_KEY,
    "anchor_key_uri": Setting.AUDIT_KEY,  # `audit verify`: the trail's audit key, whose token anchors its head
    "audit_pin_source": Setting.AUDIT_PIN_SOURCE,
    "actor": Setting.ACTOR,
    "workers": Setting.WORKERS,
    "chunk_size": Setting.CHUNK_SIZE,
    "verify_one_in": Setting.VERIFY_ONE_IN,
}
SIGNING_KEY_PARAMS = ("token_label", "key_uri")
AUDIT_KEY_PARAMS = ("audit_key_uri", "anchor_key_uri")
# A key named on the command line by URI replaces the file's token, label and id; named by its parts, the file's URI.
_KEY_PARTS = (Setting.TOKEN, Setting.TOKEN_SERIAL, Setting.KEY_LABEL, Setting.KEY_ID)
_REPLACED_BY = {"key_uri": _KEY_PARTS, "token_label": (Setting.KEY_URI,), "token_serial": (Setting.KEY_URI,),
                "key_label": (Setting.KEY_URI,), "key_id": (Setting.KEY_URI,)}

# The kinds of configuration file each command group serves. Another authority's file is refused, not
# half-used: a Librarian's file given to `ca issue-org` would sign the Issuing OCA's checkpoint with the
# Librarian's audit key. Groups not named here (hsm, policy, audit, lint) serve every kind.
_ISSUING_KINDS = frozenset({AuthorityKind.ISSUING_OCA, AuthorityKind.ISSUING_DCA})
GROUP_KINDS = {"ca": _ISSUING_KINDS, "cert": _ISSUING_KINDS, "librarian": frozenset({AuthorityKind.LIBRARIAN}),
               "batches": frozenset({AuthorityKind.ISSUING_DCA})}  # smki ca batches: the Issuing DCA's queue


@dataclass(frozen=True)
class LoadedConfiguration:
    configuration: Configuration
    origin: str  # how it was named: "--config" or "$SMKI_CONFIG"


def setting_for(command: click.Command, param: click.Parameter) -> Setting | None:
    """The setting a parameter of `command` takes from a configuration file, if any."""
    if param.name == "pin_source":
        names = {p.name for p in command.params}
        if names & set(SIGNING_KEY_PARAMS):
            return Setting.PIN_SOURCE
        return Setting.AUDIT_PIN_SOURCE if names & set(AUDIT_KEY_PARAMS) else None
    if isinstance(param, click.Argument) and param.name != "policy_file":
        return None  # arguments are what a command acts on; only a policy argument (`policy adopt`) is the authority's
    return OPTION_SETTINGS.get(param.name or "")


def defaults_for(command: click.Command, configuration: Configuration, given: set[str]) -> dict[str, object]:
    """The default_map of `command` from `configuration`, the options `given` on the command line aside."""
    replaced = {setting for name in given for setting in _REPLACED_BY.get(name, ())}
    defaults = {}
    for param in command.params:
        setting = setting_for(command, param)
        value = configuration.get(setting) if setting is not None and setting not in replaced else None
        if value is not None:
            defaults[param.name] = value.value
    return defaults


def loaded_configuration(ctx: click.Context) -> LoadedConfiguration | None:
    return ctx.meta.get(_META)


def config_option() -> click.Option:
    return click.Option(["--config", CONFIG_PARAM], type=click.Path(dir_okay=False, path_type=Path), envvar=CONFIG_ENV,
                        expose_value=False, metavar="FILE",
                        help=f"The authority's configuration file (default ${CONFIG_ENV}): its settings are this command's "
                        "defaults; an option given here overrides them. `smki config show` says where each value came from.")


class ConfiguredCommand(click.Command):
    """A command that takes --config: the file's settings become its option defaults."""

    def __init__(self, *args, reads_configuration: bool | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(config_option())
        # Whether $SMKI_CONFIG is read: by a command that takes a setting from it (or says it reads one, as
        # `config show` does). The others (`config template`, `ceremony examples`, ...) would use nothing of
        # it, and must not be refused because the variable names a file that is missing or wrong.
        self.reads_configuration = reads_configuration if reads_configuration is not None else \
            any(setting_for(self, param) is not None for param in self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = self._given_on_command_line(ctx, args)
        loaded = _load(ctx, given.get(CONFIG_PARAM), from_environment=self.reads_configuration)
        if loaded is not None:
            _refuse_another_kind(ctx, loaded.configuration)
            ctx.default_map = {**(ctx.default_map or {}), **defaults_for(self, loaded.configuration, set(given))}
        try:
            return super().parse_args(ctx, args)
        except click.BadParameter as exc:
            # A value from the file that the option's own type refuses (a worker count out of range, say): FILE:LINE: field.
            refusal = self._from_the_file(ctx, loaded, exc.param, exc.message)
            if refusal is None:
                raise
            raise refusal from None
        except BadInputError as exc:
            # An option type of smki's own refused it (an --actor with control characters): its message names no value.
            refusal = self._from_the_file(ctx, loaded, self._failed_param(ctx), str(exc))
            if refusal is None:
                raise
            raise refusal from None

    def _from_the_file(self, ctx: click.Context, loaded: LoadedConfiguration | None, param: click.Parameter | None,
                       problem: str) -> ConfigError | None:
        """`problem` as FILE:LINE: setting, when the value `param` refused came from the configuration file."""
        setting = setting_for(self, param) if param is not None else None
        if loaded is None or setting is None or ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT_MAP:
            return None
        return ConfigError(f"{loaded.configuration.where(setting)}: {setting}: {problem}")

    def _failed_param(self, ctx: click.Context) -> click.Parameter | None:
        """The parameter whose conversion failed: click records a value's source before converting it, and the value after."""
        return next((param for param in self.get_params(ctx) if param.expose_value and param.name not in ctx.params
                     and ctx.get_parameter_source(param.name) is not None), None)

    def _given_on_command_line(self, ctx: click.Context, args: list[str]) -> dict:
        """The options given on the command line (names -> raw values), without converting or checking them:
        a malformed command line is refused by the parse proper, as always."""
        try:
            opts, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        except click.UsageError:
            return {}
        return opts


def _refuse_another_kind(ctx: click.Context, configuration: Configuration) -> None:
    """A file whose `kind` is not one the command's group serves: FILE:LINE: kind, exit 3 (a file without `kind` is not checked)."""
    words = ctx.command_path.split()  # `smki ca issue-org`, or `smki config show ca issue-org`: the group is the word before the command
    group = words[-2] if len(words) >= 2 else ""
    served = GROUP_KINDS.get(group)
    if configuration.kind is None or served is None or configuration.kind in served:
        return
    raise ConfigError(f"{configuration.path}:{configuration.kind_line}: kind: this {configuration.kind} configuration is not for "
                      f"`smki {group}` commands (they take {' or '.join(sorted(served))})")


class ConfiguredGroup(click.Group):
    """A command group whose commands all take --config."""

    command_class = ConfiguredCommand


def _load(ctx: click.Context, named: str | None, from_environment: bool = True) -> LoadedConfiguration | None:
    """The configuration this command runs with: its --config, else one named by an enclosing command
    (`smki config show --config FILE COMMAND`), else $SMKI_CONFIG (when `from_environment`); loaded once, kept in ctx.meta."""
    if named:
        loaded = LoadedConfiguration(load_configuration(named), "--config")
    elif loaded_configuration(ctx) is not None:
        return loaded_configuration(ctx)
    elif from_environment and os.environ.get(CONFIG_ENV):
        loaded = LoadedConfiguration(load_configuration(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}")
    else:
        return None
    ctx.meta[_META] = loaded
    return loaded
