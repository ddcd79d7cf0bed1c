"""A job's requirements installed for real with uv (resonfl.runner.requirements): from a local
find-links folder of wheels the test builds itself, so nothing here needs the internet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from wheel_support import build_wheel

from resonfl.runner.requirements import (
    RequirementsError,
    RequirementsPolicy,
    build_env,
    parse_lines,
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, "resonfl_tinyext", "0.3", "ANSWER = 42\n", requires=("numpy", "torch>=2"))
    build_wheel(folder, "resonfl_other", "1.0", "X = 1\n")
    return folder


def _local(wheels: Path, mode: str = "any", allow: tuple[str, ...] = ()) -> RequirementsPolicy:
    return RequirementsPolicy(
        mode=mode,  # type: ignore[arg-type]
        allow=frozenset(allow),
        find_links=(str(wheels),),
        no_index=True,
    )


def test_installs_only_what_the_platform_lacks_and_caches_it(wheels: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = build_env(["resonfl-tinyext==0.3"], _local(wheels), cache, site="s1")

    assert report is not None and not report.cached
    # numpy and torch, which it requires, are the platform's own: never installed again
    assert report.packages == ["resonfl-tinyext==0.3"]
    env = Path(report.path)
    assert (env / "resonfl_tinyext" / "__init__.py").is_file()
    assert not (env / "torch").exists() and not (env / "numpy").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import resonfl_tinyext, torch; print(resonfl_tinyext.ANSWER)"],
        env={"PYTHONPATH": str(env)}, capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() == "42"

    again = build_env(["resonfl-tinyext==0.3"], _local(wheels), cache, site="s1")
    assert again is not None and again.cached and again.path == report.path


def test_allow_list_refuses_an_unlisted_package(wheels: Path, tmp_path: Path) -> None:
    policy = _local(wheels, "allow-list", ("resonfl-tinyext",))
    with pytest.raises(RequirementsError, match="refuses resonfl_other: not in its allow-list"):
        build_env(["resonfl_other"], policy, tmp_path / "cache", site="s1")
    assert not any((tmp_path / "cache").glob("[0-9a-f]*"))  # nothing built


def test_policy_off_refuses_any_requirement(wheels: Path, tmp_path: Path) -> None:
    with pytest.raises(RequirementsError, match="RESONFL_REQUIREMENTS_POLICY=off"):
        build_env(["resonfl-tinyext"], _local(wheels, "off"), tmp_path / "c", site="s1")


def test_a_job_cannot_choose_the_index() -> None:
    with pytest.raises(RequirementsError, match="pip option"):
        parse_lines(["--index-url http://evil.example/simple", "resonfl-tinyext"])


def test_no_route_to_the_index_says_so(tmp_path: Path) -> None:
    policy = RequirementsPolicy(mode="any", index_url="http://127.0.0.1:9/simple", http_retries=0)
    with pytest.raises(RequirementsError, match="no route to the package index http://127.0.0.1:9"):
        build_env(["resonfl-tinyext"], policy, tmp_path / "c", site="s1")


def test_no_requirements_build_nothing(tmp_path: Path) -> None:
    assert build_env(["# only a comment", ""], RequirementsPolicy(), tmp_path / "c") is None


def test_a_source_distribution_is_never_built_on_the_site(tmp_path: Path) -> None:
    """Building an sdist runs its setup.py unconfined, as the site worker (which can read the
    site's secret files): the site installs wheels only, and says so."""
    import io
    import tarfile

    marker = tmp_path / "setup-py-ran"
    links = tmp_path / "links"
    links.mkdir()
    files = {
        "resonfl_evil-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: resonfl_evil\nVersion: 1.0\n",
        "resonfl_evil-1.0/setup.py": (
            f"open({str(marker)!r}, 'w').write('ran')\n"
            "from setuptools import setup\nsetup(name='resonfl_evil', version='1.0')\n"
        ),
    }
    with tarfile.open(links / "resonfl_evil-1.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    policy = RequirementsPolicy(mode="any", find_links=(str(links),), no_index=True)
    with pytest.raises(RequirementsError, match="wheels only"):
        build_env(["resonfl_evil"], policy, tmp_path / "cache", site="s1")
    assert not marker.exists()
