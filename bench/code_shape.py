"""The shape of the code, for before/after comparisons (issue 15): lines per module, the longest
functions, and every place that reads the environment.

    python bench/code_shape.py [ROOT]   (default: this checkout)
"""

import ast
import sys
from pathlib import Path


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or [str(Path(__file__).resolve().parents[1])])[0])
    pkg = root / "mlops_assets"
    files = sorted(p for p in pkg.rglob("*.py"))
    print("## lines per module (largest 15)")
    sizes = sorted(((len(p.read_text().splitlines()), p.relative_to(root)) for p in files), reverse=True)
    for n, p in sizes[:15]:
        print(f"{n:5d}  {p}")
    print(f"{sum(n for n, _ in sizes):5d}  total, {len(files)} modules")
    funcs = []
    env_reads = []
    for p in files:
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{p.relative_to(root)}:{node.name}"))
            if isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", "") == "os":
                env_reads.append(f"{p.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "getenv" and getattr(node.value, "id", "") == "os":
                env_reads.append(f"{p.relative_to(root)}:{node.lineno}")
    print("\n## longest functions (10)")
    for n, name in sorted(funcs, reverse=True)[:10]:
        print(f"{n:5d}  {name}")
    print(f"\n## environment reads outside settings.py ({sum(1 for e in env_reads if 'settings.py' not in e)})")
    by_file: dict[str, int] = {}
    for e in env_reads:
        f = e.rsplit(":", 1)[0]
        by_file[f] = by_file.get(f, 0) + 1
    for f, n in sorted(by_file.items()):
        print(f"{n:5d}  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
