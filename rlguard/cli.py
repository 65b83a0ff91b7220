"""The `rlguard` command line: check, eval and test policies, print the schema, and run the tools around them.

Exit codes: 0 ok; 1 policy problems, failing cases or a failed verification; 2 usage or I/O
errors. User errors never print a Python traceback: they print ``error: <what>`` and a
``help:`` line to stderr (set ``RLGUARD_DEBUG=1`` to get the traceback of an internal error).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user error the CLI reports as ``error: message`` + ``help: hint`` and turns into an exit code."""

    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


# -- output helpers ------------------------------------------------------------------------------
def _say(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream if stream is not None else sys.stdout)


def _error(message: str, hint: str | None = None) -> None:
    _say(f"error: {message}", sys.stderr)
    if hint:
        _say(f"  help: {hint}", sys.stderr)


def _problems(problems: Sequence[Any], kind: str) -> None:
    for problem in problems:
        _say(f"{kind}: {problem}", sys.stderr)


def _json(data: Any) -> None:
    _say(json.dumps(data, indent=2, ensure_ascii=False, default=repr))


def _strerror(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- reading input -------------------------------------------------------------------------------
def _read_file(path: str, what: str) -> bytes:
    """The bytes of `path` (``-`` is stdin), at most one byte over the policy size limit."""
    from rlguard.engine.yaml_source import MAX_POLICY_BYTES

    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_POLICY_BYTES + 1)
        with open(path, "rb") as f:
            return f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {what} `{path}`: {_strerror(exc)}",
                       "check the path and its permissions") from None


def _dict_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` that refuses a repeated key (a policy refuses them too)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _display(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _too_large(data: bytes, path: str) -> None:
    from rlguard.engine.errors import PolicyError
    from rlguard.engine.yaml_source import MAX_POLICY_BYTES

    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError.single(
            f"file is larger than {MAX_POLICY_BYTES} bytes", file=_display(path), line=1, code="too_large",
            hint="split the policy, or derive child policies for subagents",
        )


def _load(path: str) -> tuple[Any, Any]:
    """(Policy, SourceMap) from a policy file. Raises CliError (I/O) or PolicyError."""
    from rlguard.engine.lint import load_with_source

    data = _read_file(path, "policy")
    _too_large(data, path)
    return load_with_source(data, _display(path))


def _load_gate(path: str) -> Any:
    from rlguard.engine.compiler import compile_policy
    from rlguard.engine.gate import PolicyGate

    policy, _ = _load(path)
    return PolicyGate(compile_policy(policy))


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """Parse a JSON object given on the command line (``@file`` reads it from a file)."""
    if text is None:
        return None
    example = f"{option} '{{\"amount_cents\": 5000}}'"
    if text.startswith("@"):
        from rlguard.engine.yaml_source import MAX_POLICY_BYTES

        path = text[1:]
        raw = _read_file(path, f"{option} file")
        if len(raw) > MAX_POLICY_BYTES:
            raise CliError(f"`{option}` file `{_display(path)}` is larger than {MAX_POLICY_BYTES} bytes",
                           "pass only the arguments the policy reads")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise CliError(f"`{option}` file `{_display(path)}` is not valid UTF-8 (byte {exc.start}, "
                           f"0x{raw[exc.start]:02x}, at line {line}, column {column})",
                           "save the file as UTF-8") from None
        if text.startswith("\ufeff"):
            text = text[1:]
    try:
        value = json.loads(text, object_pairs_hook=_dict_no_duplicates)
    except json.JSONDecodeError as exc:
        raise CliError(f"`{option}` is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                       f"pass a JSON object, e.g. {example}") from None
    except _DuplicateKey as exc:
        raise CliError(f"`{option}` has the key `{exc.key}` more than once",
                       "give each key once: a duplicate key is ambiguous, so it is refused") from None
    except RecursionError:
        raise CliError(f"`{option}` is nested too deeply", f"pass a JSON object, e.g. {example}") from None
    except ValueError:  # an integer of more than 4300 digits (Python's int_max_str_digits)
        raise CliError(f"`{option}` holds a whole number with too many digits to read",
                       "write whole numbers with at most 4300 digits") from None
    if not isinstance(value, dict):
        kind = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
                list: "an array"}.get(type(value), "something else")
        raise CliError(f"`{option}` must be a JSON object, got {kind}",
                       f"wrap the values in braces, e.g. {example}")
    return value


# -- commands ------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    """Load and lint a policy."""
    from rlguard.engine.errors import PolicyError
    from rlguard.engine.lint import lint

    name = _display(args.policy)
    try:
        policy, source = _load(args.policy)
    except CliError as exc:
        if not args.json:
            raise
        _error(exc.message, exc.hint)
        problem = {"code": "io", "message": exc.message, "file": name, "line": None, "column": None,
                   "rule_id": None, "hint": exc.hint}
        _json({"file": name, "valid": False, "errors": [problem], "warnings": []})
        return exc.code
    except PolicyError as exc:
        if args.json:
            _json({"file": name, "valid": False, "errors": [p.to_dict() for p in exc.problems], "warnings": []})
        else:
            _problems(exc.problems, "error")
            _say(f"`{name}`: {_plural(len(exc.problems), 'error')}", sys.stderr)
        return EXIT_PROBLEMS
    warnings = lint(policy, source)
    failed = bool(warnings) and args.strict
    if args.json:
        _json({
            "file": name, "valid": True, "errors": [], "warnings": [w.to_dict() for w in warnings],
            "rules": len(policy.rules), "combine": policy.combine, "default": policy.default,
            "digest": policy.digest, "fields": list(policy.fields),
        })
        return EXIT_PROBLEMS if failed else EXIT_OK
    _problems(warnings, "warning")
    shape = f"{_plural(len(policy.rules), 'rule')}, {policy.combine}, default {policy.default}"
    if warnings:
        strict = " (--strict: failing)" if failed else ""
        _say(f"`{name}`: valid ({shape}) with {_plural(len(warnings), 'warning')}{strict}")
    else:
        _say(f"`{name}`: ok ({shape}), digest {policy.digest[:12]}")
    return EXIT_PROBLEMS if failed else EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    """Decide one action and print the verdict (or the trace)."""
    from rlguard.engine.context import ActionContext

    ctx_args = _json_object(args.args, "--args")
    meta = _json_object(args.meta, "--meta")
    extra = _json_object(args.context, "--context")
    gate = _load_gate(args.policy)
    ctx = ActionContext(args.tool, ctx_args, meta, environment=args.env, agent=args.agent, session=args.session,
                        context=extra)
    if args.explain:
        trace = gate.explain(ctx)
        if args.json:
            _json(trace.to_dict())
        else:
            _say(str(trace))
    else:
        _json(dataclasses.asdict(gate.check(ctx)))
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    """Run test cases against a policy, in the manner of `opa test`."""
    from rlguard.engine.cases import CaseFileError, format_results, load_cases, run_cases, summary
    from rlguard.engine.errors import PolicyError

    cases_name = _display(args.cases)
    if args.policy == "-" and args.cases == "-":
        raise CliError("the policy and the case file cannot both come from stdin (`-`)",
                       "pass at least one of them as a file path")
    try:
        gate = _load_gate(args.policy)
        cases = load_cases(_read_file(args.cases, "case file"), cases_name)
    except (PolicyError, CaseFileError) as exc:
        if args.json:
            _json({"policy": _display(args.policy), "errors": [p.to_dict() for p in exc.problems], "cases": []})
        else:
            _problems(exc.problems, "error")
            what = _display(args.policy) if isinstance(exc, PolicyError) else cases_name
            _say(f"`{what}`: {_plural(len(exc.problems), 'error')}; no case ran", sys.stderr)
        return EXIT_PROBLEMS
    if not cases:
        raise CliError(f"no test cases in `{cases_name}`",
                       "add a case: `- {name: ..., context: {tool: ...}, expect: {action: deny}}`",
                       code=EXIT_PROBLEMS)
    results = run_cases(gate, cases)
    counts = summary(results)
    if args.json:
        _json({"policy": _display(args.policy), "cases": [r.to_dict() for r in results], "summary": counts})
    else:
        _say(format_results(results))
    return EXIT_OK if counts["pass"] == counts["total"] else EXIT_PROBLEMS


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of policy files."""
    from rlguard.engine.schema import policy_schema

    _json(policy_schema())
    return EXIT_OK


def _lazy(module: str, attr: str, command: str) -> Callable[..., Any]:
    """Import a subcommand's implementation only when it runs, with a clear error if it is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise CliError(f"`rlguard {command}` is not available: module `{module}` is not installed",
                           "reinstall rlguard (`pip install -e .` in a checkout)") from None
        raise CliError(f"`rlguard {command}` needs the Python package `{missing}`, which is not installed",
                       f"install it: `pip install {missing}`") from None
    except ImportError as exc:
        raise CliError(f"`rlguard {command}` is not available: {exc}", "reinstall rlguard") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise CliError(f"`rlguard {command}` is not available: `{module}` has no `{attr}`", "reinstall rlguard")
    return fn  # type: ignore[no-any-return]


def _exit_code(value: Any) -> int:
    if value is None:
        return EXIT_OK
    return value if isinstance(value, int) and not isinstance(value, bool) else EXIT_PROBLEMS


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify an evidence log's hash chain."""
    return _exit_code(_lazy("rlguard.evidence.verify", "verify_cli", "verify")(args.evidence, args.json))


def cmd_report(args: argparse.Namespace) -> int:
    """Write an HTML report of an evidence log."""
    return _exit_code(_lazy("rlguard.evidence.report", "report_cli", "report")(args.evidence, args.output))


def cmd_demo(args: argparse.Namespace) -> int:
    """Train under the shipped policy in several arms, evaluate with and without the gate, record evidence."""
    run_demo = _lazy("rlguard.demo.run", "run_demo", "demo")
    return _exit_code(run_demo(out=args.out, quick=args.quick, seed=args.seed, arms=args.arms,
                               iterations=args.iterations))


# -- argument parsing ----------------------------------------------------------------------------
def _arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",")]
    if not all(arms):
        raise argparse.ArgumentTypeError(f"`{text}` is not a comma-separated list of arm names "
                                         "(e.g. `ungoverned,block,block+penalty`)")
    repeated = next((a for i, a in enumerate(arms) if a in arms[:i]), None)
    if repeated is not None:
        raise argparse.ArgumentTypeError(f"arm `{repeated}` is named twice in `{text}` (each arm runs once)")
    return arms


#: The most training iterations `rlguard demo --iterations` takes (the default run uses a few hundred).
MAX_DEMO_ITERATIONS = 100_000


def _iterations(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DEMO_ITERATIONS:
        raise argparse.ArgumentTypeError(f"`{text}` is more than {MAX_DEMO_ITERATIONS} iterations")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"`{text}` is negative: seeds are whole numbers from 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"`{text}` must be at least 1")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number") from None


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error style (still exit 2 on usage errors)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _error(message, f"run `{self.prog} --help` for the options")
        raise SystemExit(EXIT_USAGE)


_EXIT_CODES = "exit codes: 0 ok; 1 {problems}; 2 usage or I/O error."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `rlguard` (one sub-parser per command)."""
    from rlguard import __version__

    parser = _Parser(prog="rlguard", description="Govern what agents do: one policy, in training and deployment.",
                     epilog=_EXIT_CODES.format(problems="policy problems, failing cases or a failed verification"))
    parser.add_argument("--version", action="version", version=f"rlguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    epilogs = {
        "check": _EXIT_CODES.format(problems="policy errors (or, with --strict, warnings)"),
        "eval": _EXIT_CODES.format(problems="policy errors (a deny verdict still exits 0)"),
        "test": _EXIT_CODES.format(problems="policy or case file errors, a failing case, or no case"),
        "schema": "exit codes: 0 ok.",
        "verify": _EXIT_CODES.format(problems="the evidence log does not verify"),
        "report": _EXIT_CODES.format(problems="the evidence log cannot be reported"),
        "demo": _EXIT_CODES.format(problems="the demo failed"),
    }

    p = sub.add_parser("check", help="load and lint a policy", description="Load a policy, report every error, "
                       "then lint it (open default, shadowed rules, agent-controlled trust fields, ...).")
    p.add_argument("policy", help="policy file (`-` for stdin)")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) on warnings too")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("eval", help="decide one action", description="Decide one action and print the verdict "
                       "as JSON, or the trace of every rule with --explain.")
    p.add_argument("policy", help="policy file (`-` for stdin)")
    p.add_argument("--tool", required=True, help="tool name, e.g. stripe.refund")
    p.add_argument("--args", metavar="JSON", help="call arguments, a JSON object (or @file.json)")
    p.add_argument("--meta", metavar="JSON", help="tool metadata (`tool.<key>`), a JSON object (or @file.json)")
    p.add_argument("--env", metavar="E", help="environment, e.g. production")
    p.add_argument("--agent", metavar="A", help="agent id")
    p.add_argument("--session", metavar="S", help="session id")
    p.add_argument("--context", metavar="JSON", help="other caller data (`context.<key>`), a JSON object")
    p.add_argument("--explain", action="store_true", help="print the trace of every rule and condition")
    p.add_argument("--json", action="store_true", help="with --explain: the trace as JSON")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("test", help="run test cases against a policy", description="Run named cases "
                       "(context + expected verdict) against a policy. Each case starts with empty budgets and "
                       "rates. Exit 1 on any failure or if no case ran.")
    p.add_argument("policy", help="policy file")
    p.add_argument("cases", help="case file (YAML list of {name, context, expect})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("schema", help="print the JSON Schema of policy files",
                       description="Print the JSON Schema (draft 2020-12) of policy files.")
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("verify", help="verify an evidence log", description="Check an evidence log's hash chain.")
    p.add_argument("evidence", help="evidence file (JSONL)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("report", help="write an HTML report of an evidence log",
                       description="Write a self-contained HTML report of an evidence log.")
    p.add_argument("evidence", help="evidence file (JSONL)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.html", help="where to write the report")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("demo", help="train under the policy and show the evidence",
                       description="Train a small agent under the shipped policy in several arms, evaluate "
                       "with and without the gate, and write evidence, plots and a report.")
    p.add_argument("--out", default="rlguard-demo", metavar="DIR",
                   help="output directory; the logs a previous demo wrote there (train-*.jsonl, deploy.jsonl) "
                   "are replaced (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 or more (default: %(default)s)")
    p.add_argument("--arms", type=_arms, default=None, metavar="A,B,...", help="arms to run (default: all)")
    p.add_argument("--iterations", type=_iterations, default=None, metavar="N",
                   help=f"training iterations (1 to {MAX_DEMO_ITERATIONS})")
    p.set_defaults(handler=cmd_demo)
    for command, subparser in sub.choices.items():
        subparser.epilog = epilogs[command]
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rlguard.engine.errors import PolicyError

    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except CliError as exc:
        _error(exc.message, exc.hint)
        return exc.code
    except PolicyError as exc:
        _problems(exc.problems, "error")
        return EXIT_PROBLEMS
    except OSError as exc:
        name = f" `{exc.filename}`" if exc.filename else ""
        _error(f"I/O error{name}: {_strerror(exc)}", "check the path, its permissions and free disk space")
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rlguard` with `argv` (default: the process arguments) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    try:
        return _run(args, parser)
    except KeyboardInterrupt:
        _say("interrupted", sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rlguard schema | head`): stop quietly, as Unix tools do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("RLGUARD_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc}",
               "this is a bug in rlguard; rerun with RLGUARD_DEBUG=1 for the traceback and report it")
        return EXIT_USAGE


__all__ = ["CliError", "build_parser", "main"]
