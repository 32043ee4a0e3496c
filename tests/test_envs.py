"""The conda environments: they parse, they hold every package their rules' scripts import, and
their pins agree with requirements.txt.

Why a static check: Snakemake's `script:` preamble appends the directory Snakemake itself is
installed in (its site-packages) to the job's sys.path, so a package missing from a rule's env
is silently imported from the launching environment whenever the Python versions match, and only
breaks on a cluster where they do not. This test reads the code instead of running it.
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, load_rule_script, rule_blocks

ENVS = sorted((REPO / "envs").glob("*.yaml"))
SCRIPTS = REPO / "scripts"
PACKAGE = "bloodcells"

# import name -> distribution name, where they differ (or where the distribution is not installed here)
DISTRIBUTION_OF = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "jsonschema": "jsonschema",
    "jinja2": "jinja2",
    "matplotlib": "matplotlib",
    "mpl_toolkits": "matplotlib",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "h5py": "h5py",
    "medmnist": "medmnist",
}
# modules a script may import that no env has to provide
PROVIDED_BY_SNAKEMAKE = {"snakemake"}


def normalise(name: str) -> str:
    """PEP 503 normal form of a distribution name (PyYAML == pyyaml, scikit_learn == scikit-learn)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(spec: str) -> tuple[str, str | None]:
    """('tensorflow', '2.21.0') from 'tensorflow[and-cuda]==2.21.0'; conda's 'python=3.11' -> ('python', '3.11')."""
    spec = spec.split("#")[0].strip()
    match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(={1,2})?\s*([^\s;,<>=!]+)?", spec)
    if not match:
        raise ValueError(f"cannot read the requirement {spec!r}")
    return normalise(match.group(1)), match.group(4) if match.group(3) else None


def env_packages(env_file: Path) -> dict[str, str | None]:
    """Distribution -> pinned version of everything an env file (and its post-deploy script) installs."""
    env = yaml.safe_load(env_file.read_text())
    packages = {}
    for dependency in env.get("dependencies", []):
        if isinstance(dependency, dict):
            for spec in dependency.get("pip", []):
                name, version = split_requirement(spec)
                packages[name] = version
        else:
            name, version = split_requirement(dependency.split("::")[-1])
            packages[name] = version
    post_deploy = env_file.with_name(env_file.stem + ".post-deploy.sh")
    if post_deploy.exists():
        for line in post_deploy.read_text().splitlines():
            if re.match(r"^\s*(python\s+-m\s+)?pip\s+install\b", line):
                for word in line.split()[2:]:
                    if not word.startswith("-") and word != "install":
                        name, version = split_requirement(word)
                        packages[name] = version
    return packages


def requirements(path: Path = REPO / "requirements.txt") -> dict[str, str | None]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, version = split_requirement(line)
            pins[name] = version
    return pins


def rules_with_env_and_script() -> list[tuple[str, Path, Path]]:
    """(rule, env file, script) of every rule in rules/*.smk that has both `conda:` and `script:`."""
    found = []
    for name, block in rule_blocks().items():
        conda = re.search(r"^\s+conda:\s*\n\s+[\"']([^\"']+)[\"']", block, flags=re.MULTILINE)
        script = re.search(r"^\s+script:\s*\n\s+[\"']([^\"']+)[\"']", block, flags=re.MULTILINE)
        if conda and script:
            # paths in conda:/script: are relative to the .smk files in rules/
            found.append(
                (name, (REPO / "rules" / conda.group(1)).resolve(), (REPO / "rules" / script.group(1)).resolve())
            )
    return found


def package_module_file(dotted: str) -> Path | None:
    """The file of a module of the scripts' own package (bloodcells.x), or None."""
    candidate = SCRIPTS.joinpath(*dotted.split("."))
    if candidate.with_suffix(".py").exists():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").exists():
        return candidate / "__init__.py"
    return None


class ImportScan:
    """Which third-party modules running a script imports, following the scripts' own package with ast.

    Counted: every import of the script itself (its functions run), the module-level imports of
    every package module it reaches (importing a module runs them), and the imports inside the
    package functions and classes the script uses, followed through the names those reference.
    A function-level import in a package function the script never reaches is not counted: that
    is how the package keeps TensorFlow out of the report rules (e.g. bloodcells.gradcam).
    """

    def __init__(self):
        self.found: dict[str, set[str]] = {}
        self.modules_done: set[Path] = set()
        self.names_done: set[tuple[Path, str]] = set()
        self.trees: dict[Path, ast.Module] = {}

    def tree(self, path: Path) -> ast.Module:
        if path not in self.trees:
            self.trees[path] = ast.parse(path.read_text(), filename=str(path))
        return self.trees[path]

    def resolve(self, path: Path, module: str | None, level: int) -> str:
        """The absolute dotted name of an import statement's module, seen from `path`."""
        if not level:
            return module or ""
        package = list(path.parent.relative_to(SCRIPTS).parts)
        base = package[: len(package) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def bindings(self, path: Path) -> dict[str, tuple[Path, str | None]]:
        """Top-level name -> (package module file, name in it or None for the module itself), from imports."""
        bound = {}
        for node in self.tree(path).body:
            if isinstance(node, ast.ImportFrom):
                dotted = self.resolve(path, node.module, node.level)
                if dotted.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:
                    submodule = package_module_file(f"{dotted}.{alias.name}")
                    target = (submodule, None) if submodule else (package_module_file(dotted), alias.name)
                    bound[alias.asname or alias.name] = target
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE and alias.asname:
                        bound[alias.asname] = (package_module_file(alias.name), None)
        return bound

    def definitions(self, path: Path) -> dict[str, ast.AST]:
        return {
            node.name: node
            for node in self.tree(path).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }

    def add(self, module: str, path: Path) -> None:
        self.found.setdefault(module, set()).add(str(path.relative_to(REPO)))

    def visit_imports(self, path: Path, nodes) -> None:
        """The import statements among `nodes`: third-party ones are recorded, package ones followed."""
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                dotted = self.resolve(path, node.module, node.level)
                names = [(dotted, alias.name) for alias in node.names]
            else:
                continue
            for dotted, name in names:
                top = dotted.split(".")[0]
                if top == PACKAGE:
                    self.run_module(SCRIPTS / PACKAGE / "__init__.py")
                    submodule = package_module_file(f"{dotted}.{name}") if name else None
                    target = submodule or package_module_file(dotted)
                    if target:
                        self.run_module(target)
                        if name and not submodule:
                            self.use(target, name)
                elif top and top not in sys.stdlib_module_names and top not in PROVIDED_BY_SNAKEMAKE:
                    self.add(top, path)

    def visit_references(self, path: Path, nodes) -> None:
        """Follow the names that `nodes` use to the package functions and classes they stand for."""
        bound, defined = self.bindings(path), self.definitions(path)
        for node in nodes:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id in defined:
                    self.use(path, node.id)
                elif node.id in bound:
                    target, name = bound[node.id]
                    if target and name:
                        self.use(target, name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                target, name = bound[node.value.id]
                if target and name is None:  # module.attribute
                    self.use(target, node.attr)

    def run_module(self, path: Path) -> None:
        """Importing a module: its module-level statements run (def and class bodies do not)."""
        if path in self.modules_done:
            return
        self.modules_done.add(path)
        statements = [
            node
            for node in self.tree(path).body
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        nodes = [child for statement in statements for child in ast.walk(statement)]
        self.visit_imports(path, nodes)
        self.visit_references(path, nodes)

    def use(self, path: Path, name: str) -> None:
        """A function or class of a package module is used: its body's imports and references count."""
        if (path, name) in self.names_done:
            return
        self.names_done.add((path, name))
        definition = self.definitions(path).get(name)
        if definition is None:
            return  # a constant, or a name the module re-exports: covered by run_module
        nodes = list(ast.walk(definition))
        self.visit_imports(path, nodes)
        self.visit_references(path, nodes)

    def run_script(self, path: Path) -> dict[str, list[str]]:
        nodes = list(ast.walk(self.tree(path)))  # the whole script: main() and what it calls run
        self.visit_imports(path, nodes)
        self.visit_references(path, nodes)
        return {module: sorted(files) for module, files in self.found.items()}


def third_party_imports(script: Path) -> dict[str, list[str]]:
    """Top-level third-party module -> the files whose (reached) code imports it."""
    return ImportScan().run_script(script)


RULES = rules_with_env_and_script()


def test_rules_were_found():
    names = {rule for rule, _, _ in RULES}
    assert {"prepare_dataset", "train", "evaluate", "gradcam", "tables_grid", "plot_curves"} <= names


@pytest.mark.parametrize("env_file", ENVS, ids=lambda path: path.name)
def test_env_file_parses_and_pins_everything(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert isinstance(env, dict) and env.get("dependencies"), env_file
    assert "conda-forge" in env.get("channels", [])
    packages = env_packages(env_file)
    assert "python" in packages
    unpinned = [name for name, version in packages.items() if version is None]
    assert not unpinned, f"{env_file.name}: unpinned {unpinned}"


@pytest.mark.parametrize("rule,env_file,script", RULES, ids=[rule for rule, _, _ in RULES])
def test_env_provides_every_import_of_the_rule_script(rule, env_file, script):
    assert env_file.exists(), f"rule {rule}: {env_file} missing"
    assert script.exists(), f"rule {rule}: {script} missing"
    provided = set(env_packages(env_file))
    missing = {}
    for module, files in third_party_imports(script).items():
        distribution = normalise(DISTRIBUTION_OF.get(module, module))
        if distribution not in provided:
            missing[module] = sorted(set(files))
    assert not missing, f"rule {rule} ({script.name}) imports what {env_file.name} lacks: {missing}"


def test_import_scan_follows_the_package():
    # train.py imports no third-party package itself; keras and tensorflow come through bloodcells.model/training
    found = third_party_imports(SCRIPTS / "train.py")
    assert {"keras", "tensorflow", "numpy"} <= set(found)
    assert "scripts/bloodcells/model.py" in found["keras"]
    # evaluate.py -> bloodcells.metrics -> sklearn (module level)
    assert "scripts/bloodcells/metrics.py" in third_party_imports(SCRIPTS / "evaluate.py")["sklearn"]


def test_import_scan_counts_lazy_imports_only_where_reached(tmp_path, monkeypatch):
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "import numpy\n"
        "from .b import helper\n"
        "def used():\n    return inner()\n"
        "def inner():\n    import scipy\n    return helper()\n"
        "def unused():\n    import tensorflow\n"
    )
    (package / "b.py").write_text("def helper():\n    from sklearn import metrics\n")
    (tmp_path / "script.py").write_text("import pandas\nfrom bloodcells.a import used\ndef main():\n    used()\n")
    monkeypatch.setattr(sys.modules[__name__], "SCRIPTS", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = third_party_imports(tmp_path / "script.py")
    assert set(found) == {"pandas", "numpy", "scipy", "sklearn"}  # not tensorflow: unused() is never reached
    assert found["sklearn"] == ["bloodcells/b.py"]


def test_pins_agree_with_requirements_txt():
    pinned = requirements()
    disagree, unlisted = [], []
    for env_file in ENVS:
        for name, version in env_packages(env_file).items():
            if name in ("python", "pip") or name.startswith("nvidia-"):  # CUDA: requirements-gpu.lock's (test_locks)
                continue
            if name not in pinned:
                unlisted.append(f"{env_file.name}: {name}")
            elif pinned[name] != version:
                disagree.append(f"{env_file.name}: {name}=={version}, requirements.txt {pinned[name]}")
    assert not disagree
    # medmnist stays out of requirements.txt on purpose (its dependencies include torch); its pin
    # must still be the one requirements.txt tells users to install with --no-deps
    assert unlisted == ["data.yaml: medmnist"], unlisted
    text = (REPO / "requirements.txt").read_text()
    assert f"medmnist=={env_packages(REPO / 'envs/data.yaml')['medmnist']}" in text


def test_envs_use_the_python_of_requirements_txt():
    python = re.search(r"Python (\d+\.\d+)", (REPO / "requirements.txt").read_text()).group(1)
    for env_file in ENVS:
        assert env_packages(env_file)["python"] == python, env_file.name


def test_requirement_parsing():
    assert split_requirement("tensorflow[and-cuda]==2.21.0") == ("tensorflow", "2.21.0")
    assert split_requirement("python=3.11") == ("python", "3.11")
    assert split_requirement("PyYAML==6.0.4  # comment") == ("pyyaml", "6.0.4")
    assert split_requirement("scikit_learn") == ("scikit-learn", None)


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.py")), ids=lambda path: path.name)
def test_rule_script_imports_resolve(script):
    # A name that moved between modules fails here in a second instead of inside a workflow run minutes later.
    load_rule_script(script.stem)
