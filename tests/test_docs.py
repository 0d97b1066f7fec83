"""The README and docs/ match the tree (issue 15): every module is named in the Layout section, every local link
resolves, and the README stays a short front page."""
import re

from tests.conftest import ROOT


def test_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    modules = {p.stem for p in (ROOT / "foldstack").glob("*.py")} - {"__init__"}
    missing = sorted(m for m in modules if f"`{m}`" not in layout)
    assert not missing, f"README Layout omits {missing}"


def test_local_links_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 16_000, "measurements and reference tables belong in docs/"
    assert readme.index("## Quick start") < readme.index("## Your own competition") < readme.index("## Documentation")
