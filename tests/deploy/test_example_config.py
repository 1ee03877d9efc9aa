"""deploy/netmon.toml: valid, every plug-in's every key present, every key commented.

Active settings are TOML; alternatives are lines prefixed "#~ " (blocks a reader
uncomments). Both are validated with the plug-ins' own Config models, and the keys
are compared with those models, so a plug-in that gains a key fails here until the
example documents it.
"""

from __future__ import annotations

import importlib
import re
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from netmon import registry
from netmon.config import Settings, plugin_config, validate

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "netmon.toml"
ALT = "#~ "


def lines() -> list[str]:
    """Every line with the alternatives' prefix removed."""
    return [line[len(ALT):] if line.startswith(ALT) else line for line in EXAMPLE.read_text().splitlines()]


def alternative_blocks() -> list[dict]:
    """Each run of "#~ " lines, parsed as its own TOML document."""
    blocks, current = [], []
    for line in EXAMPLE.read_text().splitlines() + [""]:
        if line.startswith(ALT):
            current.append(line[len(ALT):])
        elif current:
            blocks.append(tomllib.loads("\n".join(current)))
            current = []
    return blocks


def documented_keys() -> dict[tuple[str, str], set[str]]:
    """(table header, type or kind) -> keys set or shown commented ("# key = ..."), by block."""
    keys: dict[tuple[str, str], set[str]] = {}
    block = ("", "")
    last: dict[str, tuple[str, str]] = {}  # header -> its latest block, for nested tables
    for line in lines():
        if header := re.match(r"^\[\[?([\w.]+)\]\]?\s*$", line):
            if block[0]:
                last[block[0]] = block
            block = (header.group(1), "")
            parent, _, child = block[0].rpartition(".")
            if parent:  # [campus.groups], [[sinks.hooks]]: a key of the enclosing table
                keys.setdefault(last.get(parent, (parent, "")), set()).add(child)
            continue
        if ident := re.match(r'^(?:type|kind) = "([\w-]+)"', line):
            block = (block[0], ident.group(1))
        if key := re.match(r'^(?:# )?(\w+) = ["\d\[{]|^(\w+) = ', line):
            keys.setdefault(block, set()).add(key.group(1) or key.group(2))
    return keys


def nested_models(model: type[BaseModel]) -> dict[str, list[type[BaseModel]]]:
    """Fields of ``model`` holding other models (tables or arrays of tables), with their models."""
    out: dict[str, list[type[BaseModel]]] = {}
    for name, field in model.model_fields.items():
        stack, found = [field.annotation], []
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, BaseModel):
                found.append(item)
            else:
                stack.extend(typing.get_args(item))
        if found:
            out[name] = found
    return out


def expected_blocks() -> dict[tuple[str, tuple[str, ...]], type[BaseModel]]:
    """Every block the example must have (header, any of these types/kinds), with its model."""
    want: dict[tuple[str, tuple[str, ...]], type[BaseModel]] = {}
    for section in ("campus", "aggregate", "pipeline", "cluster", "logging", "detect"):
        want[(section, ("",))] = Settings.model_fields[section].annotation
    for kind, header in (("source", "sources"), ("sink", "sinks")):
        for name in registry.KINDS[kind]:
            config = registry.plugin(kind, name).Config
            want[(header, (name,))] = config
            for field, models in nested_models(config).items():
                for model in models:
                    kinds = typing.get_args(model.model_fields["kind"].annotation) if "kind" in model.model_fields else ("",)
                    want[(f"{header}.{field}", kinds)] = model
    for name in registry.DETECTORS:
        want[(f"detect.{name}", ("",))] = registry.plugin("detector", name).Config
    return want


@pytest.fixture(scope="module")
def plugins_present():
    missing = []
    for kind in ("source", "sink", "detector"):  # the config's plug-ins ([cluster] has its own extra)
        for name, module in registry.KINDS[kind].items():
            try:
                importlib.import_module(module)
            except ImportError as exc:
                missing.append(f"{kind} {name}: {exc}")
    if missing:
        pytest.skip("plug-ins not written yet: " + "; ".join(missing))


def test_active_example_is_a_valid_config(plugins_present):
    validate(tomllib.loads(EXAMPLE.read_text()), str(EXAMPLE))


def test_every_alternative_block_is_valid(plugins_present, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parents[1])  # the pcap example reads deploy/samples/
    blocks = alternative_blocks()
    assert blocks, "no alternative blocks found"
    for block in blocks:
        for table in block.get("sources", []):
            plugin_config("source", table)
        sinks = block.get("sinks", [])
        if isinstance(sinks, dict):  # [[sinks.hooks]] alternatives belong to the alerts sink
            plugin_config("sink", {"type": "alerts", **sinks})
        else:
            for table in sinks:
                plugin_config("sink", table)


def test_every_key_of_every_plugin_is_in_the_example(plugins_present):
    have = documented_keys()
    problems = []
    for (header, kinds), model in expected_blocks().items():
        blocks = [(header, k) for k in kinds if (header, k) in have]
        if not blocks:
            problems.append(f"no block for [{header}] with type/kind {' or '.join(kinds)}")
            continue
        block, keys = blocks[0], set().union(*(have[b] for b in blocks))
        names = {field.alias or name for name, field in model.model_fields.items()}  # TOML keys
        if missing := names - keys:
            problems.append(f"{block}: keys missing {sorted(missing)}")
        children = {h.rpartition(".")[2] for h, _ in have if h.startswith(header + ".")}
        if unknown := keys - names - children:
            problems.append(f"{block}: keys unknown to the plug-in {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_every_key_has_a_comment():
    text = lines()
    bare = [line for i, line in enumerate(text) if re.match(r"^\w+ = ", line)
            and not text[i - 1].startswith("#") and "  # " not in line]
    assert not bare, f"keys without a comment above or beside them: {bare}"


def test_example_config_is_safe_to_copy():
    """Copied as is, the example silences nothing, allows nothing, pages nobody and muzzles
    nobody: those are choices a campus makes, shown as "#~ " alternatives."""
    active = tomllib.loads(EXAMPLE.read_text())
    alerts = [s for s in active["sinks"] if s["type"] == "alerts"]
    for sink in alerts:
        assert not sink.get("silences"), "an active silence in the example"
        assert not sink.get("allowlist"), "an active allowlist entry in the example"
        assert not sink.get("hooks"), "an active alert hook in the example"
        assert sink.get("muzzle", {}).get("enabled") is False and not sink["muzzle"]["auto_rules"]


def test_example_config_does_not_mix_influx_v1_and_v2_keys_in_one_table():
    from netmon.sinks import influx

    v1_only, v2_only = influx.V1_KEYS, influx.V2_KEYS
    tables = [t for t in tomllib.loads(EXAMPLE.read_text())["sinks"] if t["type"] == "influx"]
    tables += [t for block in alternative_blocks() for t in block.get("sinks", []) if isinstance(block.get("sinks"), list)
               and t.get("type") == "influx"]
    assert {t.get("api", "v2") for t in tables} == {"v1", "v2"}, "the example shows both APIs"
    for table in tables:
        other = v2_only if table.get("api", "v2") == "v1" else v1_only
        assert not set(table) & other, f"api = {table.get('api', 'v2')} table has keys of the other API: {set(table) & other}"
        influx.Config.model_validate(table)


def check_config(tmp_path: Path, text: str) -> tuple[int, str]:
    import subprocess

    config = tmp_path / "netmon.toml"
    config.write_text(text)
    netmon = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "netmon"
    done = subprocess.run([str(netmon), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


SOURCE = '[[sources]]\ntype = "netflow"\nlisten = ["127.0.0.1:0"]\n'


def test_check_config_refuses_an_empty_config(tmp_path):
    code, said = check_config(tmp_path, "")
    assert code == 2 and "no [[sources]]" in said and "campus.internal is empty" in said, said


def test_check_config_refuses_a_prefix_with_host_bits_and_says_the_fix(tmp_path):
    code, said = check_config(tmp_path, f'[campus]\ninternal = ["10.20.1.0/16"]\n{SOURCE}')
    assert code == 2 and "'10.20.1.0/16' has host bits set" in said, said
    assert "write 10.20.0.0/16" in said and "10.20.1.0/24" in said, said
    code, said = check_config(tmp_path, f'[campus]\ninternal = ["10.20.0.0/16"]\n[campus.groups]\nlab = ["10.20.1.1/24"]\n'
                                        f'{SOURCE}')
    assert code == 2 and "campus.groups" in said and "write 10.20.1.0/24" in said, said


def test_check_config_refuses_a_url_without_a_scheme(tmp_path):
    code, said = check_config(tmp_path, f'[campus]\ninternal = ["10.20.0.0/16"]\n{SOURCE}'
                                        '[[sinks]]\ntype = "influx"\nurl = "localhost:8086"\ntoken = "t"\n')
    assert code == 2 and "sinks[0].url" in said and "write http://localhost:8086" in said, said
    assert "'t'" not in said, "the token must not be echoed"


def test_check_config_refuses_influx_v1_and_v2_keys_mixed_in_one_table(tmp_path):
    code, said = check_config(tmp_path, f'[campus]\ninternal = ["10.20.0.0/16"]\n{SOURCE}'
                                        '[[sinks]]\ntype = "influx"\napi = "v2"\nbucket = "netmon"\ndatabase = "nm"\n')
    assert code == 2 and 'database belong to api = "v1"' in said, said
