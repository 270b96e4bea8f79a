"""Summarise a finished `mutmut run` per module: killed / survived / no tests / timeout, as a markdown table.

Run after `mutmut run` (or `make mutants`, which runs both): `python tests/mutation_report.py`; add `--survivors`
to list the surviving mutants per function (inspect one with `mutmut show NAME`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^\s+(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")


def read_results(mutmut: str) -> list[tuple[str, str]]:
    proc = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True)
    return [(m["name"], m["status"].strip()) for line in proc.stdout.splitlines() if (m := LINE.match(line))]


def module_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def function_of(name: str) -> str:
    func = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    return func.replace("xǁ", "").replace("ǁ", ".").removeprefix("x_")


def main(argv: list[str]) -> int:
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    results = read_results(mutmut)
    if not results:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 1
    counts: dict[str, Counter] = defaultdict(Counter)
    for name, status in results:
        counts[module_of(name)][status] += 1
    cols = ["killed", "survived", "no tests", "timeout", "not checked"]
    print("| module | mutants | " + " | ".join(cols) + " | other | killed / tested |")
    print("|---" * (len(cols) + 4) + "|")
    total: Counter = Counter()
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        other = sum(v for k, v in c.items() if k not in cols)
        tested = c["killed"] + c["survived"] + c["timeout"]
        score = f"{100 * (c['killed'] + c['timeout']) / tested:.0f}%" if tested else "–"
        print(f"| `{module}` | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + f" | {other} | {score} |")
    tested = total["killed"] + total["survived"] + total["timeout"]
    print(f"| all | {sum(total.values())} | " + " | ".join(str(total[k]) for k in cols)
          + f" | {sum(v for k, v in total.items() if k not in cols)} | "
          + (f"{100 * (total['killed'] + total['timeout']) / tested:.0f}% |" if tested else "– |"))
    if "--survivors" in argv:
        by_func: dict[str, list[str]] = defaultdict(list)
        for name, status in results:
            if status == "survived":
                by_func[f"{module_of(name)}.{function_of(name)}"].append(name.rsplit("__mutmut_", 1)[1])
        print()
        for func, ids in sorted(by_func.items()):
            print(f"- `{func}`: {len(ids)} survived (mutants {', '.join(ids)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
