"""Dockerfile parser (images._dockerfile): pure unit tests, no server needed."""

from __future__ import annotations

import textwrap

import pytest

from images._dockerfile import (
    DEFAULT_BASE_ENV,
    Cmd,
    DockerfileError,
    Copy,
    Entrypoint,
    Env,
    From,
    Run,
    User,
    Workdir,
    parse_dockerfile,
)

pytestmark = pytest.mark.fast

PATH = DEFAULT_BASE_ENV["PATH"]


def parse(text: str, **kw):
    return parse_dockerfile(textwrap.dedent(text).removeprefix("\n"), **kw)


def error(text: str, **kw) -> str:
    with pytest.raises(DockerfileError) as info:
        parse(text, **kw)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def shell(cmd: str) -> Run:
    return Run(None, cmd)


# --- FROM --------------------------------------------------------------------------------


def test_from_only():
    steps = parse("FROM python:3.11-slim\n")
    assert steps == [From("python:3.11-slim")]
    assert steps[0].line == 1


def test_from_with_stage_name_is_fine_when_it_is_the_only_stage():
    assert parse("FROM python:3.11-slim AS app\n") == [From("python:3.11-slim")]
    assert parse("FROM python:3.11-slim as app\n") == [From("python:3.11-slim")]


@pytest.mark.parametrize("platform", ["linux/amd64", "LINUX/AMD64", "$BUILDPLATFORM",
                                      "${TARGETPLATFORM}", "linux/x86_64"])
def test_from_platform_amd64_is_accepted(platform):
    assert parse(f"FROM --platform={platform} debian:bookworm\n") == [From("debian:bookworm")]


def test_from_platform_other_is_rejected():
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile("\n\nFROM --platform=linux/arm64 debian\n")
    assert str(info.value) == (
        "Dockerfile line 3: FROM --platform=linux/arm64 is not supported; sandboxes run "
        "linux/amd64")


def test_from_needs_one_reference():
    msg = "FROM takes an image, optionally followed by AS name; e.g. FROM python:3.11-slim"
    assert error("FROM\n") == f"Dockerfile line 1: {msg}"
    assert error("FROM a b\n") == f"Dockerfile line 1: {msg}"
    assert error("FROM a AS b c\n") == f"Dockerfile line 1: {msg}"


def test_instructions_are_case_insensitive():
    steps = parse("""
        from alpine
        Run echo hi
        cOpY a.txt /a.txt
        workdir /w
        """)
    assert steps == [From("alpine"), shell("echo hi"), Copy(["a.txt"], "/a.txt", None, None, False),
                     Workdir("/w")]


# --- RUN, CMD, ENTRYPOINT ------------------------------------------------------------------


def test_run_shell_form_is_kept_verbatim_without_substitution():
    steps = parse(r"""
        FROM alpine
        ENV NAME=world
        RUN echo "hello $NAME" '${NAME}' \$HOME && echo a # not a comment
        """)
    assert steps[2] == shell(r"""echo "hello $NAME" '${NAME}' \$HOME && echo a # not a comment""")


def test_run_exec_form():
    steps = parse('FROM alpine\nRUN ["pip", "install", "--no-cache-dir", "a b"]\n')
    assert steps[1] == Run(["pip", "install", "--no-cache-dir", "a b"], None)


def test_run_flag_like_words_after_the_command_are_not_flags():
    steps = parse("FROM alpine\nRUN pip install --no-cache-dir -r requirements.txt\n")
    assert steps[1] == shell("pip install --no-cache-dir -r requirements.txt")


def test_run_invalid_json_is_shell_form_as_in_docker():
    assert parse("FROM a\nRUN ['echo', 'x']\n")[1] == shell("['echo', 'x']")
    assert parse('FROM a\nRUN ["echo", "x"\n')[1] == shell('["echo", "x"')


def test_exec_form_must_hold_strings_only():
    assert error('FROM a\nRUN ["sleep", 1]\n') == (
        "Dockerfile line 2: RUN: the exec form must be a JSON array of strings")
    assert error('FROM a\nCMD ["a", null]\n') == (
        "Dockerfile line 2: CMD: the exec form must be a JSON array of strings")


def test_run_needs_a_command():
    msg = "Dockerfile line 2: RUN needs a command, e.g. RUN pip install -r requirements.txt"
    assert error("FROM a\nRUN\n") == msg
    assert error("FROM a\nRUN []\n") == msg


def test_cmd_and_entrypoint_both_forms():
    steps = parse("""
        FROM a
        CMD python app.py --port $PORT
        ENTRYPOINT ["tini", "--"]
        ENTRYPOINT exec gunicorn app:app
        CMD ["python", "app.py"]
        CMD []
        """)
    assert steps[1:] == [
        Cmd(["/bin/sh", "-c", "python app.py --port $PORT"]),
        Entrypoint(["tini", "--"]),
        Entrypoint(["/bin/sh", "-c", "exec gunicorn app:app"]),
        Cmd(["python", "app.py"]),
        Cmd([]),
    ]


def test_cmd_needs_a_command():
    assert error("FROM a\nCMD\n") == (
        'Dockerfile line 2: CMD needs a command, e.g. CMD ["python", "app.py"]')
    assert error("FROM a\nENTRYPOINT   \n").startswith("Dockerfile line 2: ENTRYPOINT needs")


# --- COPY / ADD ---------------------------------------------------------------------------


def test_copy_dest_is_resolved_against_workdir():
    steps = parse("""
        FROM a
        COPY app.py /srv/app.py
        WORKDIR /app
        COPY requirements.txt .
        COPY src/ src/
        COPY setup.py pkg/setup.py
        COPY . ./
        COPY x ../x
        COPY y /
        """)
    assert steps[1:] == [
        Copy(["app.py"], "/srv/app.py", None, None, False),
        Workdir("/app"),
        Copy(["requirements.txt"], "/app/", None, None, False),
        Copy(["src/"], "/app/src/", None, None, False),
        Copy(["setup.py"], "/app/pkg/setup.py", None, None, False),
        Copy(["."], "/app/", None, None, False),
        Copy(["x"], "/x", None, None, False),
        Copy(["y"], "/", None, None, False),
    ]


def test_copy_several_sources_and_json_form():
    steps = parse("""
        FROM a
        COPY a.py b.py /app/
        COPY ["my file.txt", "other file", "/data dir/"]
        COPY *.py lib/ /srv/
        """)
    assert steps[1:] == [
        Copy(["a.py", "b.py"], "/app/", None, None, False),
        Copy(["my file.txt", "other file"], "/data dir/", None, None, False),
        Copy(["*.py", "lib/"], "/srv/", None, None, False),
    ]


def test_copy_several_sources_need_a_directory_destination():
    assert error("FROM a\nWORKDIR /app\nCOPY a b dest\n") == (
        "Dockerfile line 3: COPY of several sources needs a directory ending in /: /app/dest/")


def test_copy_flags():
    steps = parse("""
        FROM a
        ARG UID=1000
        COPY --chown=${UID}:${UID} --chmod=0755 run.sh /usr/local/bin/
        COPY --chmod=644 --link a /a
        ADD --chown=app a.txt /a.txt
        COPY -- --odd-name /x
        """)
    assert steps[1:] == [
        Copy(["run.sh"], "/usr/local/bin/", "1000:1000", 0o755, False),
        Copy(["a"], "/a", None, 0o644, False),
        Copy(["a.txt"], "/a.txt", "app", None, True),
        Copy(["--odd-name"], "/x", None, None, False),
    ]


def test_copy_substitutes_variables_in_sources_and_dest():
    steps = parse("""
        FROM a
        ARG SRC=build
        ENV DEST=/opt/app
        COPY $SRC/out.bin "${SRC}/quoted" ${DEST}/
        COPY ["$SRC/x", "$DEST/x"]
        """)
    assert steps[2:] == [
        Copy(["build/out.bin", "build/quoted"], "/opt/app/", None, None, False),
        Copy(["build/x"], "/opt/app/x", None, None, False),
    ]


def test_add_of_a_plain_file_is_a_copy_marked_add():
    assert parse("FROM a\nADD conf/ /etc/app/\n")[1] == Copy(["conf/"], "/etc/app/", None, None,
                                                              True)


def test_copy_needs_source_and_dest():
    assert error("FROM a\nCOPY onlyone\n") == (
        "Dockerfile line 2: COPY needs sources and a destination, e.g. COPY app.py /app/")
    assert error("FROM a\nADD\n").startswith("Dockerfile line 2: ADD needs sources")


@pytest.mark.parametrize("src", ["/etc/passwd", "../secret", "a/../../b", "..", "$EMPTY"])
def test_copy_sources_must_stay_in_the_context(src):
    msg = error(f"FROM a\n\nCOPY {src} /x\n")
    shown = "" if src == "$EMPTY" else src
    assert msg == (f"Dockerfile line 3: COPY source {shown!r} is not inside the build context; "
                   "sources are paths relative to context_dir")


@pytest.mark.parametrize("url", ["http://example.com/a.tgz", "https://example.com/x",
                                 "git@github.com:me/repo.git", "git://host/repo"])
def test_add_from_url_is_rejected(url):
    assert error(f"FROM a\nADD {url} /x\n") == (
        f"Dockerfile line 2: ADD from a URL ({url}) is not supported; download it in a RUN "
        "step instead (RUN curl -fsSLo DEST URL, or Image.run_commands)")


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz", "a.tgz", "a.tar.xz", "a.tar.bz2",
                                  "A.TAR.GZ", "dist/*.tar.gz"])
def test_add_of_a_local_archive_is_rejected(name):
    assert error(f"FROM a\nADD {name} /opt/\n") == (
        f"Dockerfile line 2: ADD would unpack the archive {name}, which is not supported; "
        "COPY it and unpack it with RUN tar -xf instead")


def test_copy_of_an_archive_is_fine():
    assert parse("FROM a\nCOPY a.tar.gz /opt/\n")[1] == Copy(["a.tar.gz"], "/opt/", None, None,
                                                             False)


def test_copy_from_is_multi_stage():
    assert error("FROM a\nCOPY --from=builder /app /app\n") == (
        "Dockerfile line 2: COPY --from is not supported: multi-stage builds are not supported; "
        "build the final stage only and copy from the build context")


@pytest.mark.parametrize("flag", ["--parents", "--exclude=*.pyc", "--checksum=sha256:x"])
def test_other_copy_flags_are_rejected(flag):
    name = flag[2:].split("=")[0]
    assert error(f"FROM a\nCOPY {flag} x /x\n") == (
        f"Dockerfile line 2: COPY --{name} is not supported; remove it")


def test_duplicate_flag_is_rejected():
    assert error("FROM a\nCOPY --chown=a --chown=b x /x\n") == (
        "Dockerfile line 2: COPY --chown is not supported twice; remove it")


def test_chmod_must_be_octal():
    assert error("FROM a\nCOPY --chmod=u+x x /x\n") == (
        "Dockerfile line 2: COPY --chmod=u+x is not an octal mode such as 755")
    assert error("FROM a\nCOPY --chmod=0999 x /x\n").startswith("Dockerfile line 2: COPY --chmod")


def test_chown_must_not_be_empty():
    assert error("FROM a\nCOPY --chown=$NOBODY x /x\n") == (
        "Dockerfile line 2: COPY --chown needs a user, e.g. --chown=1000:1000")


# --- ENV -----------------------------------------------------------------------------------


def test_env_forms_and_quotes():
    steps = parse(r"""
        FROM a
        ENV A=1 B="two words" C='single $A' D=a\ b E="say \"hi\"" F= G=""
        ENV LEGACY value with   spaces
        ENV QUOTED "quoted value"
        """)
    assert steps[1:] == [
        Env({"A": "1", "B": "two words", "C": "single $A", "D": "a b", "E": 'say "hi"', "F": "",
             "G": ""}),
        Env({"LEGACY": "value with   spaces"}),
        Env({"QUOTED": "quoted value"}),
    ]


def test_env_sees_earlier_env_but_not_its_own_instruction():
    steps = parse("""
        FROM a
        ENV abc=hello
        ENV abc=bye def=$abc
        ENV ghi=$abc
        ENV PATH=/opt/venv/bin:$PATH
        """)
    assert steps[2:] == [Env({"abc": "bye", "def": "hello"}), Env({"ghi": "bye"}),
                         Env({"PATH": f"/opt/venv/bin:{PATH}"})]


def test_env_base_env_is_what_the_image_sets():
    steps = parse("FROM a\nENV PATH=/x:$PATH LANG=${LANG:-C}\n",
                  base_env={"PATH": "/usr/bin", "LANG": "C.UTF-8"})
    assert steps[1] == Env({"PATH": "/x:/usr/bin", "LANG": "C.UTF-8"})


def test_env_errors():
    assert error("FROM a\nENV A\n") == "Dockerfile line 2: ENV: A has no value; write ENV A=value"
    assert error("FROM a\nENV A=1 B\n") == (
        "Dockerfile line 2: ENV: B has no value; write ENV B=value")
    assert error("FROM a\nENV\n") == "Dockerfile line 2: ENV needs a value: ENV NAME=value"
    assert error("FROM a\nENV =x\n") == (
        "Dockerfile line 2: ENV: a variable name is empty; write NAME=value")
    assert error('FROM a\nENV A="x\n') == "Dockerfile line 2: ENV: unterminated double quote"
    assert error("FROM a\nENV A='x\n") == "Dockerfile line 2: ENV: unterminated single quote"


# --- WORKDIR, USER -------------------------------------------------------------------------


def test_workdir_resolves_relative_paths():
    steps = parse("""
        FROM a
        WORKDIR app
        WORKDIR src
        WORKDIR ../lib/./x/
        WORKDIR /abs//path
        ENV HOME_DIR=/home/me
        WORKDIR $HOME_DIR/work
        WORKDIR ../../..
        """)
    assert [s.path for s in steps if isinstance(s, Workdir)] == [
        "/app", "/app/src", "/app/lib/x", "/abs/path", "/home/me/work", "/"]


def test_workdir_and_user_errors():
    assert error("FROM a\nWORKDIR\n") == "Dockerfile line 2: WORKDIR needs a path, e.g. WORKDIR /app"
    assert error("FROM a\nUSER $NOPE\n") == (
        "Dockerfile line 2: USER needs a user name or uid, e.g. USER 1000:1000")


def test_user_substitution():
    steps = parse("FROM a\nARG UID=1000\nUSER ${UID}:${GID:-100}\nUSER app\n")
    assert steps[1:] == [User("1000:100"), User("app")]


# --- ARG scoping and build_args ------------------------------------------------------------


def test_arg_before_from_is_only_for_from():
    steps = parse("""
        ARG VERSION=3.11
        FROM python:${VERSION}-slim
        ENV V=${VERSION:-unset}
        RUN echo $VERSION
        """)
    assert steps == [From("python:3.11-slim"), Env({"V": "unset"}), shell("echo $VERSION")]
    assert steps[2].build_env == {}


def test_arg_redeclared_after_from_takes_the_global_value():
    steps = parse("""
        ARG VERSION=3.11
        FROM python:$VERSION
        ARG VERSION
        ENV V=$VERSION
        RUN echo $VERSION
        """)
    assert steps == [From("python:3.11"), Env({"V": "3.11"}),
                     Run(None, "echo $VERSION", build_env={"VERSION": "3.11"})]


def test_build_args_override_defaults_everywhere():
    text = """
        ARG VERSION=3.11
        FROM python:$VERSION
        ARG VERSION
        ARG MODE=dev
        ARG EXTRA
        ENV V=$VERSION M=$MODE E=${EXTRA:-none}
        """
    assert parse(text) == [From("python:3.11"), Env({"V": "3.11", "M": "dev", "E": "none"})]
    overridden = parse(text, build_args={"VERSION": "3.12", "MODE": "prod", "EXTRA": "x",
                                         "UNDECLARED": "ignored"})
    assert overridden == [From("python:3.12"), Env({"V": "3.12", "M": "prod", "E": "x"})]


def test_arg_in_stage_default_wins_over_global_default_but_not_over_build_args():
    text = "ARG X=global\nFROM a\nARG X=stage\nENV X2=$X\n"
    assert parse(text)[1] == Env({"X2": "stage"})
    assert parse(text, build_args={"X": "cli"})[1] == Env({"X2": "cli"})


def test_arg_without_value_is_unset():
    steps = parse("FROM a\nARG NOVALUE\nENV A=${NOVALUE-unset} B=${NOVALUE:+set}\nRUN true\n")
    assert steps[1:] == [Env({"A": "unset", "B": ""}), Run(None, "true", build_env={})]


def test_args_reach_run_as_build_env_unless_env_shadows_them():
    steps = parse("""
        FROM a
        ARG A=1 B=2
        ARG C=$A-$B
        RUN echo $A
        ENV A=from-env
        RUN ["echo", "$A"]
        ARG A=ignored
        ENV D=$A
        """)
    assert steps[1:] == [
        Run(None, "echo $A", build_env={"A": "1", "B": "2", "C": "1-2"}),
        Env({"A": "from-env"}),
        Run(["echo", "$A"], None, build_env={"B": "2", "C": "1-2"}),
        Env({"D": "from-env"}),
    ]


def test_meta_arg_may_use_earlier_meta_args():
    steps = parse("ARG REG=docker.io\nARG IMG=${REG}/library/python\nFROM $IMG:3.11\n")
    assert steps == [From("docker.io/library/python:3.11")]
    steps = parse("ARG REG=docker.io\nARG IMG=${REG}/python\nFROM $IMG\n",
                  build_args={"REG": "ghcr.io"})
    assert steps == [From("ghcr.io/python")]


def test_arg_errors():
    assert error("FROM a\nARG\n") == (
        "Dockerfile line 2: ARG needs a name: ARG NAME or ARG NAME=default")
    assert error("FROM a\nARG =1\n") == (
        "Dockerfile line 2: ARG =1 has no name; write ARG NAME=default")


def test_from_reference_empty_after_substitution():
    assert error("ARG IMAGE\nFROM $IMAGE\n") == (
        "Dockerfile line 2: FROM: $IMAGE is empty; give the ARG a default or a build_arg")
    assert parse("ARG IMAGE\nFROM $IMAGE\n", build_args={"IMAGE": "x"}) == [From("x")]


def test_build_args_must_be_strings():
    with pytest.raises(DockerfileError, match="build_args and base_env"):
        parse_dockerfile("FROM a\n", build_args={"A": 1})


# --- substitution --------------------------------------------------------------------------


@pytest.mark.parametrize("word, expected", [
    ("$SET", "value"),
    ("${SET}", "value"),
    ("pre${SET}post", "prevaluepost"),
    ("$SET.txt", "value.txt"),
    ("$SET_x", ""),
    ("${UNSET}", ""),
    ("${UNSET:-default}", "default"),
    ("${EMPTY:-default}", "default"),
    ("${SET:-default}", "value"),
    ("${UNSET-default}", "default"),
    ("${EMPTY-default}", ""),
    ("${SET:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET:+alt}", ""),
    ("${UNSET:-${SET}}", "value"),
    ('"${UNSET:-a b}"', "a b"),
    (r"\$SET", "$SET"),
    (r"\${SET}", "${SET}"),
    ("'$SET'", "$SET"),
    ('"$SET"', "value"),
    (r'"\$SET"', "$SET"),
    ("$", "$"),
    ("a$", "a$"),
    ("$1", ""),
    ("$$", ""),
    ("${SET:?}", "value"),
])
def test_substitution_forms(word, expected):
    text = f"FROM a\nARG SET=value\nARG EMPTY=\nENV R={word}\n"
    assert parse_dockerfile(text)[1] == Env({"R": expected})


USE = "use ${NAME}, ${NAME:-default}, ${NAME:+alternative} or ${NAME:?}"


@pytest.mark.parametrize("word, why", [
    ("${UNSET:?must be given}", "UNSET: must be given"),
    ("${UNSET?}", "UNSET: is not allowed to be unset or empty"),
    ("${}", "bad substitution: ${ must be followed by a variable name"),
    ("${:x}", "bad substitution: ${ must be followed by a variable name"),
    ("${SET", "missing '}' in ${...}"),
    ("${SET:-x", "missing '}' in ${...}"),
    ("${SET#pre}", "unsupported modifier (#) in ${SET...}; " + USE),
    ("${SET:=x}", "unsupported modifier (:=) in ${SET...}; " + USE),
])
def test_substitution_errors(word, why):
    text = f"FROM a\nARG SET=value\nWORKDIR {word}\n"
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text)
    assert str(info.value) == f"Dockerfile line 3: WORKDIR: {why}"


# --- lines: continuations, comments, directives --------------------------------------------


def test_continuations_comments_and_blank_lines():
    text = (
        "# leading comment\n"
        "\n"
        "FROM a\n"
        "RUN apt-get update && \\\n"
        "    # a comment inside the continuation\n"
        "\n"
        "    apt-get install -y \\  \n"
        "\tcurl\n"
        "   # indented comment line\n"
        "  ENV A=1 \\\n"
        "      B=2\n")
    steps = parse_dockerfile(text)
    assert steps == [From("a"), shell("apt-get update &&     apt-get install -y \tcurl"),
                     Env({"A": "1", "B": "2"})]
    assert [s.line for s in steps] == [3, 4, 10]


def test_trailing_continuation_at_end_of_file():
    assert error("FROM a\nCOPY a \\\n") == (
        "Dockerfile line 2: COPY needs sources and a destination, e.g. COPY app.py /app/")
    assert parse_dockerfile("FROM a\nRUN echo a \\")[1] == shell("echo a")


def test_line_numbers_count_physical_lines():
    text = "FROM a\nRUN a \\\n  b \\\n  c\n\n# c\nRUN d\nONBUILD RUN x\n"
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text)
    assert str(info.value) == (
        "Dockerfile line 8: ONBUILD is not supported; put the commands in RUN instead")


def test_windows_line_endings_and_bom():
    steps = parse_dockerfile("\ufeffFROM a\r\nRUN echo a \\\r\n  b\r\nENV X=1\r\n")
    assert steps == [From("a"), shell("echo a   b"), Env({"X": "1"})]


def test_escape_directive_backtick():
    text = (
        "# escape=`\n"
        "FROM mcr.microsoft.com/windows\n"
        "COPY C:\\dir\\file.txt dest\\ `\n"
        "     /x/\n"
        "ENV P=c:\\path A=`$HOME B=\"q`\"q\"\n"
        "RUN echo a `\n"
        "  b\n")
    steps = parse_dockerfile(text)
    assert steps[1:] == [
        Copy(["C:\\dir\\file.txt", "dest\\"], "/x/", None, None, False),
        Env({"P": "c:\\path", "A": "$HOME", "B": 'q"q'}),
        shell("echo a   b"),
    ]


def test_escape_directive_forms():
    assert parse_dockerfile("#escape = `\nFROM a\nRUN x `\ny\n")[1] == shell("x y")
    assert parse_dockerfile("# syntax=docker/dockerfile:1\n# ESCAPE=`\nFROM a\nRUN x `\ny\n")[
        1] == shell("x y")


def test_directive_after_a_comment_or_blank_line_is_a_comment():
    # Not directives any more: the backslash stays the escape character.
    for head in ("# hello\n", "\n", "# unknown=directive\n"):
        steps = parse_dockerfile(head + "# escape=`\nFROM a\nRUN x \\\ny\n")
        assert steps[1] == shell("x y")


def test_bad_directives():
    assert error("# escape=x\nFROM a\n") == (
        "Dockerfile line 1: bad parser directive '# escape=x': each may appear once, and the "
        "escape character must be \\ or `")
    assert error("# escape=`\n# escape=\\\nFROM a\n").startswith(
        "Dockerfile line 2: bad parser directive '# escape=\\\\'")


# --- heredocs ------------------------------------------------------------------------------


def test_heredocs_are_rejected():
    assert error("FROM a\nRUN <<EOF\napt-get update\nEOF\n") == (
        "Dockerfile line 2: RUN with a heredoc (<<EOF) is not supported; join the commands "
        "with && on continued lines (ending in \\)")
    assert error("FROM a\n\nRUN cat <<-'END' > /x\nhi\nEND\n").startswith(
        "Dockerfile line 3: RUN with a heredoc")
    assert error('FROM a\nCOPY <<"EOF" /app/conf\nx=1\nEOF\n') == (
        "Dockerfile line 2: COPY with a heredoc (<<EOF) is not supported; put the file in the "
        "build context")


def test_shift_operators_and_here_strings_are_not_heredocs():
    steps = parse_dockerfile(
        'FROM a\nRUN echo "a <<b" && cat <<<text && echo $((1<<2))\nCMD cat <<EOF\n')
    assert steps[1:] == [shell('echo "a <<b" && cat <<<text && echo $((1<<2))'),
                         Cmd(["/bin/sh", "-c", "cat <<EOF"])]


# --- rejected and ignored instructions -----------------------------------------------------


def test_second_from_is_multi_stage():
    assert error("FROM golang AS build\nRUN go build\n\nFROM debian\n") == (
        "Dockerfile line 4: FROM: multi-stage builds are not supported (a second FROM; the "
        "first is on line 1); build the final stage only")


@pytest.mark.parametrize("line, why", [
    ("HEALTHCHECK CMD curl -f http://localhost/", "sandboxes have no health checks; remove it"),
    ("ONBUILD RUN make", "put the commands in RUN instead"),
    ("VOLUME /data", "sandboxes have no volumes; remove it (create it with RUN mkdir -p)"),
    ('SHELL ["/bin/bash", "-c"]',
     'use the exec form with the shell you want: RUN ["bash", "-c", "..."]'),
])
def test_unsupported_instructions(line, why):
    name = line.split()[0]
    assert error(f"FROM a\nRUN true\n{line}\n") == (
        f"Dockerfile line 3: {name} is not supported; {why}")
    assert error(f"FROM a\n{line.lower()}\n").startswith(f"Dockerfile line 2: {name} is not")


def test_unknown_instruction():
    assert error("FROM a\nCOPYY a b\n") == (
        "Dockerfile line 2: unknown instruction COPYY; use FROM, ARG, RUN, COPY, ADD, ENV, "
        "WORKDIR, USER, CMD, ENTRYPOINT (LABEL, EXPOSE, ... are ignored)")


def test_metadata_instructions_are_ignored():
    steps = parse("""
        FROM a
        LABEL org.opencontainers.image.source="https://x" version=1
        EXPOSE 8080/tcp 9090
        STOPSIGNAL SIGTERM
        MAINTAINER someone <me@example.com>
        RUN true
        """)
    assert steps == [From("a"), shell("true")]
    assert steps[1].line == 6


def test_instruction_before_from():
    assert error("ARG A=1\n# c\nRUN true\nFROM a\n") == (
        "Dockerfile line 3: RUN before FROM; start with FROM (only ARG may precede it)")
    assert error("LABEL a=b\nFROM a\n").startswith("Dockerfile line 1: LABEL before FROM")


def test_no_from_at_all():
    msg = "the Dockerfile has no FROM instruction; start it with FROM <image>"
    assert error("") == f"Dockerfile line 1: {msg}"
    assert error("# only a comment\n\nARG A=1\n") == f"Dockerfile line 3: {msg}"


@pytest.mark.parametrize("flag", ["--mount=type=cache,target=/root/.cache", "--network=none",
                                  "--security=insecure"])
def test_run_flags_are_rejected(flag):
    name = flag[2:].split("=")[0]
    assert error(f"FROM a\nRUN {flag} pip install x\n") == (
        f"Dockerfile line 2: RUN --{name} is not supported (BuildKit-only); remove it")


def test_flags_on_other_instructions_are_rejected():
    assert error("FROM a\nWORKDIR --x=1 /a\n") == (
        "Dockerfile line 2: WORKDIR --x is not supported; remove it")


# --- the instructions themselves -----------------------------------------------------------


def test_line_is_recorded_but_not_compared():
    steps = parse_dockerfile("\n\nFROM a\n\nRUN x\n")
    assert [s.line for s in steps] == [3, 5]
    assert steps == [From("a", line=99), Run(None, "x", line=7)]


def test_realistic_python_app():
    text = r"""
        # syntax=docker/dockerfile:1.6
        ARG PYTHON_VERSION=3.11

        FROM python:${PYTHON_VERSION}-slim AS runtime
        LABEL maintainer="team@example.com"

        ARG APP_USER=app
        ARG PIP_INDEX_URL
        ENV PYTHONDONTWRITEBYTECODE=1 \
            PYTHONUNBUFFERED=1 \
            VIRTUAL_ENV=/opt/venv
        ENV PATH="$VIRTUAL_ENV/bin:$PATH"

        RUN apt-get update \
            && apt-get install -y --no-install-recommends build-essential curl \
            && rm -rf /var/lib/apt/lists/*
        RUN python -m venv $VIRTUAL_ENV \
            && useradd --create-home ${APP_USER}

        WORKDIR /srv/app
        COPY requirements.txt .
        RUN pip install --no-cache-dir -r requirements.txt
        COPY --chown=${APP_USER}:${APP_USER} src/ ./src/
        COPY ["pyproject.toml", "README.md", "./"]

        USER $APP_USER
        EXPOSE 8000
        ENTRYPOINT ["python", "-m", "app"]
        CMD ["--host", "0.0.0.0", "--port", "8000"]
        """
    steps = parse(text, build_args={"PIP_INDEX_URL": "https://pypi.internal/simple"})
    build_env = {"APP_USER": "app", "PIP_INDEX_URL": "https://pypi.internal/simple"}
    assert steps == [
        From("python:3.11-slim"),
        Env({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "VIRTUAL_ENV": "/opt/venv"}),
        Env({"PATH": f"/opt/venv/bin:{PATH}"}),
        Run(None, "apt-get update     && apt-get install -y --no-install-recommends "
                  "build-essential curl     && rm -rf /var/lib/apt/lists/*",
            build_env=build_env),
        Run(None, "python -m venv $VIRTUAL_ENV     && useradd --create-home ${APP_USER}",
            build_env=build_env),
        Workdir("/srv/app"),
        Copy(["requirements.txt"], "/srv/app/", None, None, False),
        Run(None, "pip install --no-cache-dir -r requirements.txt", build_env=build_env),
        Copy(["src/"], "/srv/app/src/", "app:app", None, False),
        Copy(["pyproject.toml", "README.md"], "/srv/app/", None, None, False),
        User("app"),
        Entrypoint(["python", "-m", "app"]),
        Cmd(["--host", "0.0.0.0", "--port", "8000"]),
    ]
    assert [s.line for s in steps] == [4, 9, 12, 14, 17, 20, 21, 22, 23, 24, 26, 28, 29]
