"""The deployment files and the README stay true to the code: commands exist, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import yaml

from services.cli.main import app as cli
from services.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.append(str(alias.choices[0]) if alias is not None else "CCT_" + name.upper())  # type: ignore[union-attr]
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = {m.group(1) for line in table if (m := re.match(r"\| `([A-Z_]+)`", line))}
    assert set(_env_names()) <= documented, set(_env_names()) - documented


def test_the_readme_table_gives_each_settings_default() -> None:
    """The default the README shows is the code's: `value`, `unset` (None) or `empty` ("")."""
    readme = (ROOT / "README.md").read_text()
    cells = {
        m.group(1): m.group(2).strip()
        for line in readme.splitlines()
        if (m := re.match(r"\| `([A-Z_]+)`[^|]*\|([^|]+)\|", line))
    }
    checked = 0
    for env, field in zip(_env_names(), Settings.model_fields.values(), strict=True):
        if field.default_factory is not None:  # computed (the data folder, the login name): said in words
            continue
        default = field.default
        shown = "unset" if default is None else "empty" if default == "" else f"`{default}`"
        assert cells[env].startswith(shown), (env, cells[env], shown)
        checked += 1
    assert checked >= 20


def test_readme_shows_the_two_commands_and_links() -> None:
    readme = (ROOT / "README.md").read_text()
    for needle in ("make demo", "make test", "docs/architecture.md", "docs/bank-api.md", "docs/performance.md"):
        assert needle in readme


def test_compose_commands_are_real_cli_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    click_cli = typer.main.get_command(cli)
    checked = 0
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command or service.get("image", "").startswith("postgres"):
            continue
        args = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(a)) for a in command]
        ctx = click_cli.make_context("cct-ledger", list(args), resilient_parsing=False)
        with ctx:
            sub_name, sub, rest = click_cli.resolve_command(ctx, list(args))  # type: ignore[attr-defined]
            assert sub is not None, name
            if hasattr(sub, "resolve_command") and rest and not rest[0].startswith("-"):
                sub_ctx = sub.make_context(sub_name, list(rest), parent=ctx)
                _, leaf, leaf_args = sub.resolve_command(sub_ctx, list(rest))
                leaf.make_context(rest[0], list(leaf_args), parent=sub_ctx)
            else:
                sub.make_context(sub_name, list(rest), parent=ctx)
        checked += 1
    assert checked == 3  # migrate, api, bank-sim


def test_the_image_carries_every_package() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in ("ledger", "services", "adapters", "migrations"):
        assert f"COPY {package} {package}" in dockerfile


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every group and command under ``group`` (a command with ``commands``) with its path of names."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
    return found


def test_every_group_and_command_has_an_example() -> None:
    root = typer.main.get_command(cli)
    missing = [
        " ".join(path) or "cct-ledger" for path, c in [((), root), *_commands(root)] if "Example:" not in (c.help or "")
    ]
    assert not missing, missing


def test_every_command_is_in_the_readme_at_a_glance() -> None:
    readme = (ROOT / "README.md").read_text()
    glance = readme.split("## The command line at a glance", 1)[1].split("```", 2)[1]
    root = typer.main.get_command(cli)
    missing = []
    for path, command in _commands(root):
        if hasattr(command, "commands"):
            continue
        group, name = (path[0], path[-1]) if len(path) > 1 else (None, path[0])
        lines = [line for line in glance.splitlines() if group is None or f"cct-ledger {group} " in line]
        if not any(re.search(rf"(^|[\s|]){re.escape(name)}(\s|$)", line.split("#")[0]) for line in lines):
            missing.append(" ".join(path))
    assert not missing, missing
