"""The container images, read from their Dockerfiles: Docker is not available where the tests run,
so the builds themselves are not exercised here (`make images` and `make kind-up` do that);
what can be judged from the files is. Multi-stage, a pinned slim base shared by both stages,
a numeric non-root user that is the one the operator's pod specs run as, nothing but the
installed package in the final stage (no compiler, no pip, no source tree), the entrypoints
the operator and compose call, and a build context that leaves everything else out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import agentgov
from agentgov.api.bundle import INBOUND_PORT
from agentgov.controller.builders.deployment import SIDECAR_UID
from agentgov.controller.config import DEFAULT_IMAGE

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {'agentgov': REPO / 'Dockerfile', 'example agent': REPO / 'examples' / 'agent' / 'Dockerfile'}
PINNED_BASE = re.compile(r'^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$|^python:[^@]+@sha256:[0-9a-f]{64}$')
BUILD_TOOLS = re.compile(r'\b(gcc|g\+\+|build-essential|make|git|curl|wget|apt-get install)\b')


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.argument for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    args: dict[str, str]  # ARGs declared before the first FROM, with their defaults
    stages: tuple[Stage, ...]

    def resolve(self, text: str) -> str:
        return re.sub(r'\$\{?(\w+)\}?', lambda m: self.args.get(m.group(1), m.group(0)), text)


def parse(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped, split into stages."""
    logical: list[str] = []
    pending = ''
    for line in path.read_text(encoding='utf-8').splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue  # comments may sit between continuation lines too
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        logical.append(pending + stripped)
        pending = ''
    assert not pending, f'{path}: a continuation line ends the file'
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    base, name = '', None
    for text in logical:
        keyword, _, argument = text.partition(' ')
        keyword = keyword.upper()
        if keyword == 'FROM':
            if current is not None:
                stages.append(Stage(base, name, tuple(current)))
            words = argument.split()
            base, name = words[0], (words[2] if len(words) == 3 and words[1].upper() == 'AS' else None)
            current = []
        elif current is None:
            assert keyword == 'ARG', f'{path}: {keyword} before the first FROM'
            key, _, default = argument.partition('=')
            args[key] = default
        else:
            current.append(Instruction(keyword, argument.strip()))
    assert current is not None, f'{path}: no FROM'
    stages.append(Stage(base, name, tuple(current)))
    return Dockerfile(args, tuple(stages))


@pytest.fixture(params=list(DOCKERFILES), ids=list(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse(DOCKERFILES[request.param])


def test_the_build_is_multi_stage_with_a_named_builder(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) == 2
    assert [s.name for s in dockerfile.stages] == ['builder', 'runtime']
    final = dockerfile.stages[-1]
    copied = final.all('COPY')
    assert copied and all(c.startswith('--from=builder ') for c in copied), 'the final stage copies only from the builder'


def test_both_stages_use_one_pinned_slim_base(dockerfile: Dockerfile) -> None:
    bases = {dockerfile.resolve(stage.base) for stage in dockerfile.stages}
    assert len(bases) == 1
    (base,) = bases
    assert PINNED_BASE.match(base), f'{base} is not pinned to a patch release (or a digest)'
    assert 'latest' not in base and 'slim' in base


def test_the_final_stage_runs_as_the_numeric_non_root_user_the_pods_expect(dockerfile: Dockerfile) -> None:
    users = dockerfile.stages[-1].all('USER')
    assert users == [f'{SIDECAR_UID}:{SIDECAR_UID}'], 'numeric, so runAsNonRoot can verify it; the uid the operator sets'
    assert SIDECAR_UID != 0


def test_the_final_stage_holds_no_build_tools_pip_or_source(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    runs = ' '.join(final.all('RUN'))
    assert not BUILD_TOOLS.search(runs)
    assert 'pip uninstall' in runs and 'pip install' not in runs
    assert '--no-cache-dir' in runs
    assert not any('operator/' in c or c.startswith('. ') for c in final.all('COPY') + final.all('ADD'))
    builder_env = ' '.join(dockerfile.stages[0].all('ENV'))
    assert 'PIP_NO_CACHE_DIR=1' in builder_env


def test_the_operator_image_entrypoint_is_the_agentgov_command() -> None:
    image = parse(DOCKERFILES['agentgov'])
    final = image.stages[-1]
    assert final.all('ENTRYPOINT') == ['["agentgov"]']
    assert str(INBOUND_PORT) in ' '.join(final.all('EXPOSE'))
    assert f'ARG VERSION={agentgov.__version__}' in [f'ARG {a}' for a in final.all('ARG')]
    assert 'agentgov --version' in ' '.join(image.stages[0].all('RUN')), 'the builder smoke-runs the installed command'


def test_the_example_agent_image_runs_the_example_agent_module() -> None:
    final = parse(DOCKERFILES['example agent']).stages[-1]
    assert final.all('ENTRYPOINT') == ['["python", "-m", "agentgov.demo.agent"]']
    assert 'PORT=8000' in ' '.join(final.all('ENV'))
    from agentgov.demo import agent

    assert callable(agent.main)


def test_the_default_image_names_agree() -> None:
    compose = (REPO / 'deploy' / 'compose' / 'compose.yaml').read_text(encoding='utf-8')
    makefile = (REPO / 'Makefile').read_text(encoding='utf-8')
    assert f'${{AGENTGOV_IMAGE:-{DEFAULT_IMAGE}}}' in compose
    assert f'IMAGE ?= {DEFAULT_IMAGE}' in makefile


# --- the build context ----------------------------------------------------------------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    def matches(pattern: str, candidate: str) -> bool:
        regex = re.escape(pattern).replace(r'\*\*', '\0').replace(r'\*', '[^/]*').replace('\0', '.*').replace(r'\?', '[^/]')
        return re.fullmatch(regex, candidate) is not None

    parts = path.split('/')
    candidates = ['/'.join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith('!')
        body = pattern.removeprefix('!').strip('/')
        if any(matches(body, c) for c in candidates):
            excluded = not negated
    return excluded


def dockerignore() -> list[str]:
    return [line.strip() for line in (REPO / '.dockerignore').read_text(encoding='utf-8').splitlines()
            if line.strip() and not line.startswith('#')]


@pytest.mark.parametrize(
    'path, excluded',
    [('pyproject.toml', False), ('README.md', False), ('operator/agentgov/cli.py', False),
     ('operator/agentgov/py.typed', False), ('.git/config', True), ('.venv/bin/python', True),
     ('tests/conftest.py', True), ('operator/agentgov/__pycache__/cli.cpython-311.pyc', True),
     ('operator/agentgov.egg-info/PKG-INFO', True), ('deploy/compose/keygen.py', True), ('.env', True),
     ('benchmarks/results/operator_scale.json', True)],
)
def test_the_build_context_holds_only_what_the_wheel_is_built_from(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(path, dockerignore()) is excluded


def test_what_the_builder_copies_exists_and_is_in_the_context() -> None:
    for name in DOCKERFILES:
        for copy in parse(DOCKERFILES[name]).stages[0].all('COPY'):
            *sources, _destination = copy.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert not dockerignore_excludes(source.rstrip('/'), dockerignore()), source


def test_the_dockerfile_parser_sees_a_mutable_base_and_a_root_user(tmp_path: Path) -> None:
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM python:latest AS builder\nRUN echo\nFROM python:latest\nUSER root\n', encoding='utf-8')
    parsed = parse(bad)
    assert not PINNED_BASE.match(parsed.resolve(parsed.stages[-1].base))
    assert parsed.stages[-1].all('USER') == ['root']
    assert [s.name for s in parsed.stages] == ['builder', None]
