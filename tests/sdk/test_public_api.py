"""The package namespace is the API: pin it, and keep the SDK free of server imports."""

import subprocess
import sys

import sandbox_service
from sandbox_service.wire import _errors as E

EXPECTED = {
    "App", "AuthenticationError", "ConflictError", "ContainerProcess", "ExecTimeoutError",
    "Filesystem", "Image", "ImageBuildError", "InvalidRequestError", "NotFoundError",
    "PayloadTooLargeError", "PermissionDeniedError", "PortForward", "PortUnreachableError",
    "QuotaExceededError", "RuntimeUnavailableError", "Sandbox", "SandboxError", "SandboxFileError",
    "SandboxFile", "SandboxFileNotFoundError", "SandboxOOMError", "SandboxTerminatedError",
    "SandboxTimeoutError", "SandboxUnresponsiveError", "Secret", "ServerUnreachableError", "StreamReader", "StreamWriter",
    "Tunnel", "__version__", "enable_output",
    # the code interpreter (E2B's names)
    "Context", "Execution", "ExecutionError", "Logs", "Result",
    # functions and classes (Modal's names)
    "Cls", "Error", "Function", "FunctionCall", "Obj", "Retries", "batched", "concurrent",
    "current_function_call_id", "current_input_id", "enter", "exception", "exit", "is_local",
    "method", "parameter",
    # storage
    "Dict", "Queue", "Volume",
    # schedules
    "Cron", "Period",
    # GPUs
    "GpuBusyError", "GpuUnavailableError",
    # web endpoints
    "asgi_app", "fastapi_endpoint", "web_endpoint", "web_server", "wsgi_app",
}


def test_modal_submodules_import_and_missing_names_say_so():
    from sandbox_service.app import App
    from sandbox_service.cls import Cls
    from sandbox_service.exception import FunctionTimeoutError, InputCancellation, NotFoundError
    from sandbox_service.functions import FunctionCall

    assert App is sandbox_service.App and Cls is sandbox_service.Cls
    assert FunctionCall is sandbox_service.FunctionCall
    assert issubclass(FunctionTimeoutError, TimeoutError)
    assert issubclass(NotFoundError, sandbox_service.Error)
    assert not issubclass(InputCancellation, Exception)
    # Modal's submodules are attributes of the package too, as in Modal
    assert sandbox_service.container_process.ContainerProcess is sandbox_service.ContainerProcess
    assert sandbox_service.output.enable_output is sandbox_service.enable_output
    assert sandbox_service.functions.Function is sandbox_service.Function
    assert sandbox_service.volume.Volume is sandbox_service.Volume
    for mod, name in ((sandbox_service, "NetworkFileSystem"), (sandbox_service.exception, "Nope"),
                      (sandbox_service, "Mount"), (sandbox_service, "forward")):
        try:
            getattr(mod, name)
        except AttributeError as e:
            assert "sandbox-service" in str(e)
        else:
            raise AssertionError(name)


def test_all_is_pinned():
    assert set(sandbox_service.__all__) == EXPECTED
    for name in sandbox_service.__all__:
        assert hasattr(sandbox_service, name), name


def test_import_does_not_load_server_or_fastapi():
    code = ("import sys, sandbox_service; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn', 'runtimes', 'images') or "
            "m.startswith('sandbox_service.server')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_error_codes_are_unique_and_map_back():
    seen = {}
    for code, cls in E.ERROR_CODES.items():
        assert cls.code == code
        assert code not in seen
        seen[code] = cls
        exc = E.error_from_wire(cls.http_status, cls("boom").to_wire())
        assert type(exc) is cls and exc.message == "boom"
    assert issubclass(E.ExecTimeoutError, TimeoutError)
    assert issubclass(E.SandboxFileNotFoundError, FileNotFoundError)
    assert issubclass(E.SandboxOOMError, MemoryError)
    unknown = E.error_from_wire(418, {"error": {"code": "teapot", "message": "short and stout"}})
    assert type(unknown) is E.SandboxError and unknown.code == "teapot"


def test_modal_style_import_alias():
    import sandbox_service as modal

    for name in ("App", "Sandbox", "Image", "Secret"):
        assert getattr(modal, name)
    assert callable(modal.Sandbox.create) and callable(modal.Sandbox.create.aio)
    assert callable(modal.App.lookup.aio)


def test_stream_reader_decodes_split_utf8_and_binary():
    import asyncio

    from sandbox_service._streams import _AsyncStreamReader

    async def run():
        r = _AsyncStreamReader(text=True)
        data = "héllo €\n".encode()
        for i in range(len(data)):
            r._feed(data[i:i + 1])  # every multi-byte char split across chunks
        r._feed(b"\xff\xfe\n")
        r._close()
        return await r.read()

    assert asyncio.run(run()) == "héllo €\n\ufffd\ufffd\n"


def test_import_is_light_and_copies_of_wire_limits_agree():
    """`import sandbox_service` and registering functions load neither httpx nor pydantic
    (function containers import the user's module at every cold start)."""
    code = ("import sys, sandbox_service as m; m.App('x').function()(len); m.Image; m.Secret; "
            "m.method; m.parameter; import sandbox_service._runner; "
            "bad = [x for x in ('httpx', 'pydantic') if x in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    from sandbox_service import _invocation, _serialization, wire

    assert _serialization.MAX_PAYLOAD_BYTES == wire.MAX_PAYLOAD_BYTES
    assert _invocation.MAX_INPUTS_PER_REQUEST == wire.MAX_INPUTS_PER_REQUEST
