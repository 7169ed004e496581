"""MkDocs hook: publish the committed results under sweeps/results/ with the docs.

The pages in docs/ link to figures and reports as `../sweeps/results/...`, the relative path that
works on GitHub. This hook adds every file under sweeps/results/ to the site under that same
source path (so those links resolve and `mkdocs build --strict` checks them), written to
`<site>/sweeps/results/...`. Nothing is copied into docs/; the results' own .md files are
rendered as pages outside the navigation.
"""

from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

REPO_DIRS = ["sweeps/results"]


def on_files(files, config):
    docs_dir = Path(config["docs_dir"])
    root = docs_dir.parent
    for folder in REPO_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            # where the file would land if it lived in docs/ at `rel`
            dest = File(rel, None, config["site_dir"], config["use_directory_urls"]).dest_uri
            files.append(
                File(
                    f"../{rel}",
                    str(docs_dir),
                    config["site_dir"],
                    config["use_directory_urls"],
                    dest_uri=dest,
                    inclusion=InclusionLevel.NOT_IN_NAV,
                )
            )
    return files
