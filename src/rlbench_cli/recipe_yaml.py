"""Reading recipe YAML safely and applying `key=value` overrides (no pydantic, no torch): the text layer below
config.py's schema.

`read_yaml` guards untrusted recipe text (size cap, UTF-8, no NUL, yaml.safe_load without Python tags, alias bombs
and runaway nesting refused); every problem is a UserError naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlbench_cli.errors import UserError

# Guards for untrusted recipe text: YAML aliases can expand a small file into billions of nodes
# ("billion laughs").
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes the YAML graph expands to once aliases are copied (memoised: aliases share composed nodes)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # guards against a self-referencing alias looping forever
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            size = 1
        memo[key] = min(size, MAX_YAML_NODES + 1)
    return memo[key]


class YamlSyntaxError(UserError):
    """The text is not YAML at all (as opposed to YAML that is unsafe or too big)."""


def safe_yaml_load(text: str, where: str) -> Any:
    """yaml.safe_load guarded against Python tags, alias bombs and runaway nesting; errors are UserErrors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise UserError(
                f"YAML expands to more than {MAX_YAML_NODES} values (anchors/aliases repeated too deeply)",
                where=where, fix="write the recipe without deeply repeated aliases",
            )
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise UserError(
            f"unsupported YAML tag or value ({(e.problem or 'cannot construct').strip()})", where=loc,
            fix="recipes are loaded with yaml.safe_load: plain mappings, lists, strings and numbers only",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["invalid YAML"])[0]
        raise YamlSyntaxError(f"YAML syntax error: {problem}", where=loc,
                              fix="correct the YAML at that line") from None
    except RecursionError:
        raise UserError("YAML nested too deeply", where=where, fix="flatten the recipe") from None


def read_yaml(path: Path) -> dict[str, Any]:
    where = str(path)
    if not path.exists():
        raise UserError("recipe file not found", where=where,
                        fix="check the path; `rlbench recipes` lists shipped ones")
    if path.is_dir():
        raise UserError("is a folder, not a recipe file", where=where, fix="pass a .yaml file")
    try:
        # Read at most the limit (+1 to detect overflow): a device or pipe path must not be read forever.
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", where=where) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise UserError(f"larger than {MAX_RECIPE_BYTES // 1024} KiB; not a recipe", where=where,
                        fix="pass a recipe YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        hint = " (looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise UserError(f"not UTF-8 text{hint} (byte {e.start})", where=where,
                        fix="save the recipe as UTF-8") from None
    if "\x00" in text:
        raise UserError("contains NUL bytes; not a YAML text file", where=where, fix="pass a YAML recipe") from None
    data = safe_yaml_load(text, where)
    if data is None:
        raise UserError("recipe is empty", where=where, fix="start from a shipped recipe (`rlbench recipes`)")
    if not isinstance(data, dict):
        raise UserError(
            f"top level must be a mapping of sections, got {type(data).__name__}", where=where,
            fix="start from a shipped recipe (`rlbench recipes`)",
        )
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} is not KEY=VALUE", where="command line", fix="write e.g. optim.lr=1e-5")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"override key {key!r} is malformed", where="command line", fix="write e.g. optim.lr=1e-5")
    try:
        value = safe_yaml_load(raw, where=f"override {item!r}") if raw.strip() else None
    except YamlSyntaxError:
        value = raw  # not YAML (e.g. an unquoted string with a colon): keep the text
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(
                    f"override {item!r}: '{part}' is a value, not a section", where="command line"
                )
            node = child
        node[parts[-1]] = value
    return data
