"""The ``evsim`` command: a click group; each subcommand lives in its own module."""
from __future__ import annotations

import ast
import errno
import io
import os
import signal
import sys
from pathlib import Path


def _interrupted_while_starting(signum, frame):
    """Ctrl-C while the subcommands import NumPy, Numba and matplotlib (about half a second):
    one line and exit code 130, not a traceback from deep inside an import."""
    sys.stderr.write("Interrupted.\n")
    sys.stderr.flush()
    # Not SystemExit: an import that guards itself with a bare except would swallow it and
    # go on. Nothing has been written yet, so there is nothing to clean up.
    os._exit(130)


def _terminated_while_starting(signum, frame):
    """SIGTERM in the same half second: one line and exit code 143, as Ctrl-C gives 130."""
    sys.stderr.write("Stopped by SIGTERM.\n")
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


# A process started with Ctrl-C ignored keeps ignoring it: the embedded sweep cluster's
# workers, which import this module when they start (see evsim.sweep.execute.local_cluster),
# and jobs a shell runs in the background. Such a process keeps SIGTERM as it was too.
SIGINT_IGNORED = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
TERM_DEFAULT = not SIGINT_IGNORED and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
if not SIGINT_IGNORED:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
if TERM_DEFAULT:
    signal.signal(signal.SIGTERM, _terminated_while_starting)

import click  # noqa: E402

from evsim.errors import EvsimError  # noqa: E402

try:  # the subcommands' imports compile for a kind of machine, which EVSIM_MACHINE_KIND can name
    import evsim.kernels  # noqa: E402, F401
except EvsimError as exc:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(2)


class _StdoutOutlivingItsReader(io.TextIOWrapper):
    """The process's stdout, which sends what is written after its reader has gone (``|
    head``, a ``tee`` that died, a closed terminal) to nowhere instead of raising. A reader
    leaving is no request to stop: every command goes on to its end and writes every file
    it was asked for, as someone who piped it to ``head`` for the first lines wants."""

    def write(self, text):
        try:
            return super().write(text)
        except BrokenPipeError:
            self._to_nowhere()
            return len(text)

    def flush(self):
        try:
            super().flush()
        except BrokenPipeError:
            self._to_nowhere()

    def _to_nowhere(self):
        # Onto the descriptor itself, so that the buffered rest and the flush at exit go there too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.fileno())
        os.close(devnull)


def _stdout_outliving_its_reader() -> None:
    """Put :class:`_StdoutOutlivingItsReader` over the process's own stdout (not over one a
    caller such as click's test runner put in its place)."""
    out = sys.stdout
    if out is None or out is not sys.__stdout__ or isinstance(out, _StdoutOutlivingItsReader):
        return
    out.flush()
    sys.stdout = _StdoutOutlivingItsReader(out.buffer, encoding=out.encoding, errors=out.errors,
                                           line_buffering=out.line_buffering, write_through=out.write_through)


class EvsimGroup(click.Group):
    """Reports bad usage, every deliberate EvsimError, running out of memory and every
    unusable path as one line, exit code 2."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)  # errors are always handled here
        _stdout_outliving_its_reader()
        try:
            result = super().main(args, prog_name, standalone_mode=False, **kwargs)
            if isinstance(result, int) and result:  # ctx.exit(code) returns its code when not standalone
                sys.exit(result)
            return result
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns a Ctrl-C inside a command into Abort
                click.echo("Interrupted.", err=True)
                sys.exit(130)
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except KeyboardInterrupt:  # a Ctrl-C no command handles (training handles its first one itself)
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click prints it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except EvsimError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except MemoryError as exc:  # what no command's own check foresaw (other processes, a tight limit)
            detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "no allocation named"
            click.echo(f"Error: out of memory ({detail}); free memory, or {_less_memory(args)}", err=True)
            sys.exit(2)
        except OSError as exc:
            if exc.filename is None:  # not about a path the user chose: keep the traceback
                raise
            click.echo(f"Error: {_os_error_line(exc)}", err=True)
            sys.exit(2)
        except RuntimeError as exc:
            loop = _symlink_loop(exc)
            if loop is None:
                raise
            click.echo(f"Error: cannot use {loop}: a loop of symbolic links; fix or remove the links, or choose "
                       "another path", err=True)
            sys.exit(2)


# What each command can be asked to do with less memory (others: another machine).
_MEMORY_FIXES = {"train": "ask for less (a smaller --batch-size, --time-steps or network)",
                 "eval": "ask for less (a smaller --batch-size or --time-steps)",
                 "profile": "ask for less (a smaller --batch-size)",
                 "inspect": "ask for less (a smaller --batch-size)"}


def _less_memory(args) -> str:
    """How the command in ``args`` (default: the process's) can need less memory."""
    words = [word for word in (sys.argv[1:] if args is None else args) if not word.startswith("-")]
    return _MEMORY_FIXES.get(words[0] if words else "", "run it on a machine with more memory")


def _symlink_loop(exc: RuntimeError) -> str | None:
    """The path of Python 3.11's ``Path.resolve()`` error ``Symlink loop from '<path>'``
    (a RuntimeError, not an OSError), or ``None`` for any other RuntimeError."""
    prefix = "Symlink loop from "
    text = str(exc)
    if not text.startswith(prefix):
        return None
    try:
        path = Path(ast.literal_eval(text[len(prefix):]))
    except (ValueError, SyntaxError):
        return text[len(prefix):]
    for part in [*reversed(path.parents), path]:  # name the link that loops, not a file below it
        if os.path.islink(part) and not os.path.exists(part):
            return str(part)
    return str(path)


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError about the path the user chose: the problem and the fix."""
    path, reason = exc.filename, exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk is full: no other path will help
        return f"cannot write {path}: {reason}; free some space there, or choose a path on another disk"
    if exc.errno == errno.EFBIG:
        return (f"cannot write {path}: the file size limit (ulimit -f) was reached; raise the limit, or choose "
                "smaller outputs")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
        if exc.errno == errno.ENOTDIR:  # a folder above the path is a file: name that one
            path = next((p for p in Path(path).parents if os.path.isfile(p)), path)
        what = _what_is(path)
        if what is not None:
            fix = "remove or fix the link" if what.startswith("a broken link") else "move it away"
            return f"cannot use {path}: it is {what}; {fix}, or choose another path"
    if _in_default_cache(path):  # the user chose no path: name the options that choose one
        return (f"cannot use {path}: {reason}; give a writable cache folder with --cache-dir or $EVSIM_CACHE "
                "(or fix its permissions)")
    return f"cannot use {path}: {reason}; choose another path (or fix its permissions)"


def _in_default_cache(path) -> bool:
    """Whether ``path`` is the default cache folder, in it, or a folder made for it
    (``~/.cache``)."""
    try:
        default = default_cache_dir()
    except EvsimError:
        return False
    path = Path(os.path.abspath(path))
    return path.is_relative_to(default) or (default.is_relative_to(path) and path.is_relative_to(default.parent))


def _what_is(path) -> str | None:
    """'a file, not a folder', 'a folder, not a file', 'a broken link (...)' for a path that
    is in the way of a folder or file to be made, or ``None`` if it is none of these."""
    try:
        os.stat(path)
    except OSError:
        return "a broken link (a missing target or a loop of links)" if os.path.islink(path) else None
    if os.path.isdir(path):
        return "a folder, not a file"
    return "a file, not a folder"


@click.group(cls=EvsimGroup)
@click.version_option(package_name="evsim")
def main():
    """evsim: event-driven spiking neural network simulation and training on CPU."""


from evsim.cli.data import data  # noqa: E402
from evsim.cli.eval import eval_command  # noqa: E402
from evsim.cli.inspect import inspect_command  # noqa: E402
from evsim.cli.nir import export, import_nir  # noqa: E402
from evsim.cli.profile import profile  # noqa: E402
from evsim.cli.runs_cmd import runs  # noqa: E402
from evsim.cli.sweep import sweep  # noqa: E402
from evsim.cli.train import train  # noqa: E402
from evsim.data.cache import default_cache_dir  # noqa: E402

main.add_command(data)
main.add_command(eval_command)
main.add_command(export)
main.add_command(inspect_command)
main.add_command(import_nir)
main.add_command(profile)
main.add_command(runs)
main.add_command(sweep)
main.add_command(train)

# Imports are done: from here Ctrl-C is a KeyboardInterrupt, which EvsimGroup.main reports,
# and SIGTERM is the commands' to handle (training and sweeps stop cleanly on it).
if not SIGINT_IGNORED:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if TERM_DEFAULT:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

if __name__ == "__main__":  # python -m evsim.cli.main
    main(prog_name="evsim")
