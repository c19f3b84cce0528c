"""`smki policy`: check, show, compare and adopt Certificate Policy files."""

from __future__ import annotations

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.cert import issuing_authority
from smki.cli.common import POLICY, emit, json_option, state_option
from smki.identifiers import PolicyKind
from smki.policy import Environment, load_policy

policy_argument = click.argument("policy_file", type=POLICY)


@click.group("policy", cls=ConfiguredGroup)
def policy_group() -> None:
    """The machine-readable Certificate Policies.

    smki ships two, named builtin:organisation (SEC Appendix B) and builtin:device (Appendix A)
    wherever a policy is taken (POLICY arguments, --policy, a ceremony file's policy:); any other
    POLICY is a file. An unknown builtin: name is refused (exit 3) with the known ones listed.
    """


@policy_group.command("check")
@click.argument("files", nargs=-1, required=True, type=POLICY, metavar="POLICY...")
@json_option
def check_command(files, as_json) -> None:
    """Validate policies: YAML, the JSON Schema smki ships, cross-field rules.

    Each POLICY is a file, or builtin:organisation / builtin:device (the shipped policies).
    Errors name file, line and field. Exit 0 when all are valid, 3 at the first invalid one.
    """
    results = []
    for path in files:
        policy = load_policy(path)
        results.append({"file": str(path), "kind": policy.hierarchy, "version": policy.version, "sha256": policy.sha256})
    emit(as_json, results, lambda rows: "\n".join(f"{r['file']}: valid {r['kind']} policy {r['version']} sha256 {r['sha256']}" for r in rows))


def _summary(policy, environment: Environment | None) -> dict:
    environments = [environment] if environment else list(Environment)
    document = policy.document
    summary = {**policy.identity, "kind": policy.hierarchy, "file": str(policy.path),
               "policy_oids": {e.value: policy.policy_oid(e) for e in environments},
               "root": document["ca_hierarchy"]["root"], "issuing": document["ca_hierarchy"]["issuing"],
               "subscriber_certificates": document["subscriber_certificates"], "eligibility": document["eligibility"],
               "revocation": document["revocation"], "custody": document["key_management"]["custody"],
               "audit_events": document["audit"]["events"]}
    if policy.hierarchy is PolicyKind.DEVICE:
        summary["hw_type_oids"] = {e.value: document["identification"]["hw_type_oids"][e.value] for e in environments}
    return summary


def _summary_text(s: dict) -> str:
    name = lambda subject: ",".join(f"{k}={v}" for k, v in subject)
    lines = [f"{s['name']} {s['version']} ({s['kind']}), sha256 {s['sha256']}",
             "policy OIDs: " + ", ".join(f"{env} {oid}" for env, oid in s["policy_oids"].items()),
             f"root {name(s['root']['subject'])} validity {s['root']['validity']} pathLen {s['root']['path_length']}; "
             f"issuing {name(s['issuing']['subject'])} validity {s['issuing']['validity']} pathLen {s['issuing']['path_length']}",
             f"subscribers: {s['subscriber_certificates']}", f"eligibility: {s['eligibility']}",
             f"revocation: {s['revocation']['method']}, reasons {', '.join(s['revocation']['reasons'])}",
             "custody: " + ", ".join(f"{level} {c['threshold']} of {c['custodians']}" for level, c in s["custody"].items())]
    return "\n".join(lines)


@policy_group.command("show")
@policy_argument
@click.option("--environment", help="test or production (default: both).")
@json_option
def show_command(policy_file, environment, as_json) -> None:
    """Summarise a policy (a file, or builtin:organisation / builtin:device): identity, OIDs, hierarchy,
    subscribers, eligibility, revocation, custody."""
    policy = load_policy(policy_file)
    emit(as_json, _summary(policy, Environment.parse(environment) if environment else None), _summary_text)


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


@policy_group.command("diff")
@click.argument("old", type=POLICY)
@click.argument("new", type=POLICY)
@json_option
def diff_command(old, new, as_json) -> None:
    """What would change for issuance between two policies (files, or builtin:NAME). Exit 0 if nothing, 1 if changes."""
    before, after = dict(_flatten(load_policy(old).document)), dict(_flatten(load_policy(new).document))
    changes = [{"field": key, "old": before.get(key), "new": after.get(key)}
               for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    emit(as_json, changes, lambda rows: "\n".join(f"{r['field']}: {r['old']!r} -> {r['new']!r}" for r in rows) or "no change")
    if changes:
        raise SystemExit(1)


@policy_group.command("adopt")
@policy_argument
@state_option
@json_option
def adopt_command(policy_file, state_dir, actor, audit_key_uri, audit_pin_source, as_json) -> None:
    """Adopt a policy for an authority: from now on it issues and revokes only under it.

    POLICY is a file, or builtin:organisation / builtin:device; the adoption records its SHA-256
    (for a builtin, of the file smki ships), so a later edit or upgrade that changes it is refused until adopted."""
    with issuing_authority({"state_dir": state_dir, "actor": actor, "audit_key_uri": audit_key_uri,
                            "audit_pin_source": audit_pin_source}) as authority:
        data = authority.adopt_policy(policy_file)
    emit(as_json, data, lambda d: f"adopted {d['kind']} policy {d['version']} sha256 {d['sha256']}"
         + (f" (replaces {d['replaces']['version']} {d['replaces']['sha256'][:16]}...)" if d["replaces"] else ""))
