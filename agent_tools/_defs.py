"""Tool definitions for agent frameworks and one `dispatch` (agent-tools layer).

Generated from the `TOOLS` table in `_models.py`, the same models the MCP server uses:
OpenAI Chat Completions and Responses function definitions (plus a strict variant: every
property required, additionalProperties false, optional fields nullable, and no keywords
strict mode rejects), Anthropic tool definitions, and `AgentTools.dispatch(name,
arguments)` which validates and executes a call. Must not import `mcp` or the server.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from sandbox_service.aio import LOOP, Client

from ._models import TOOLS, TOOLS_BY_NAME, ToolSpec
from ._scopes import ScopeRegistry
from ._toolbox import Outcome, Toolbox, ToolFailure

_STRICT_DROP = ("default", "title", "minLength", "maxLength")


def input_schema(spec: ToolSpec) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as MCP, OpenAI and Anthropic all publish it."""
    schema = spec.input.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def output_schema(spec: ToolSpec) -> dict[str, Any]:
    return spec.output.model_json_schema()


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI strict mode: all properties required, no additional ones, optional ones
    nullable (null means "use the default"), no keywords strict mode rejects."""
    s = copy.deepcopy(schema)
    required = set(s.get("required", []))
    props = s.get("properties", {})
    for name, prop in list(props.items()):
        notes = [f"{k} {prop[k]}" for k in ("minLength", "maxLength") if k in prop]
        if "default" in prop:
            notes.append(f"default {json.dumps(prop['default'])}")
        for k in _STRICT_DROP:
            prop.pop(k, None)
        for alt in prop.get("anyOf", []):
            for k in _STRICT_DROP:
                alt.pop(k, None)
        if notes:
            prop["description"] = (prop.get("description", "") + " (" + "; ".join(notes) + ")").strip()
        if name not in required:
            alts = prop.get("anyOf")
            if alts is None:
                desc = prop.pop("description", None)
                prop = {"anyOf": [prop, {"type": "null"}]}
                if desc:
                    prop["description"] = desc
            elif not any(a.get("type") == "null" for a in alts):
                alts.append({"type": "null"})
            props[name] = prop
    s["required"] = list(props)
    s["additionalProperties"] = False
    return s


def openai_chat_tools(strict: bool = False) -> list[dict[str, Any]]:
    """`tools=` for Chat Completions."""
    return [{"type": "function", "function": {
        "name": t.name, "description": t.description,
        "parameters": strict_schema(input_schema(t)) if strict else input_schema(t),
        **({"strict": True} if strict else {})}} for t in TOOLS]


def openai_responses_tools(strict: bool = False) -> list[dict[str, Any]]:
    """`tools=` for the Responses API (and the Agents SDK's FunctionTool schemas)."""
    return [{"type": "function", "name": t.name, "description": t.description,
             "parameters": strict_schema(input_schema(t)) if strict else input_schema(t),
             "strict": strict} for t in TOOLS]


def anthropic_tools() -> list[dict[str, Any]]:
    """`tools=` for Anthropic's Messages API."""
    return [{"name": t.name, "description": t.description, "input_schema": input_schema(t)}
            for t in TOOLS]


def parse_arguments(name: str, arguments: Any) -> tuple[ToolSpec, Any]:
    """Validate a call's arguments (a dict or a JSON string) into the tool's input model;
    nulls mean "default", so strict-mode calls validate too."""
    spec = TOOLS_BY_NAME.get(name)
    if spec is None:
        raise ToolFailure(f"unknown tool {name!r}: the tools are {', '.join(TOOLS_BY_NAME)}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError as e:
            raise ToolFailure(f"arguments of {name} are not valid JSON: {e}") from None
    if not isinstance(arguments, dict):
        raise ToolFailure(f"arguments of {name} must be a JSON object")
    try:
        return spec, spec.input.model_validate({k: v for k, v in arguments.items() if v is not None})
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}"
                         for x in e.errors()[:5])
        raise ToolFailure(f"invalid arguments for {name}: {errs}") from None


class AgentTools:
    """The tools for a framework that calls functions itself (OpenAI, Anthropic, ...).

        tools = AgentTools()                      # SBX_URL / SBX_TOKEN
        result = tools.dispatch("run_code", {"code": "print(1)"})
        tools.close()                             # destroys the sandboxes it created
    """

    def __init__(self, url: str | None = None, token: str | None = None):
        self._url, self._token = url, token
        self._client: Client | None = None
        self.registry = ScopeRegistry(self._terminate)

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = Client(self._url, self._token)
        return self._client

    async def _terminate(self, ids: list[str], token: str | None) -> None:
        from sandbox_service.aio import AsyncSandbox

        for sid in ids:
            try:
                await (await AsyncSandbox.from_id(sid, client=self._get_client())).terminate()
            except Exception:
                pass

    async def acall(self, name: str, arguments: Any, progress=None) -> Outcome:
        """Run a call; a failure comes back as an is_error Outcome, never raised. Runs on
        the SDK's own loop, so sync and async callers share one client."""
        return await LOOP.run_async(self._acall(name, arguments, progress))

    async def _acall(self, name: str, arguments: Any, progress=None) -> Outcome:
        try:
            spec, args = parse_arguments(name, arguments)
            client = self._get_client()
            box = Toolbox(client, self.registry.get("local", client.token), progress=progress)
            return await box.call(spec.name, args)
        except ToolFailure as e:
            if e.outcome is not None:
                return e.outcome
            return _error_outcome(str(e))

    async def adispatch(self, name: str, arguments: Any) -> dict[str, Any]:
        return (await self.acall(name, arguments)).to_json()

    def dispatch(self, name: str, arguments: Any) -> dict[str, Any]:
        """Execute one tool call; returns a JSON-able dict (with `is_error` on failure)."""
        return LOOP.run(self.adispatch(name, arguments))

    def openai_result(self, name: str, arguments: Any) -> str:
        """The `content` string of a tool / function_call_output message."""
        return json.dumps(self.dispatch(name, arguments))

    def anthropic_result(self, tool_use_id: str, name: str, arguments: Any) -> dict[str, Any]:
        """A `tool_result` content block, images included."""
        out = LOOP.run(self.acall(name, arguments))
        content: list[dict[str, Any]] = [{"type": "text", "text": json.dumps(out.to_json())}]
        for data, mime in out.images:
            content.append({"type": "image", "source": {
                "type": "base64", "media_type": mime, "data": base64.b64encode(data).decode()}})
        return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content,
                **({"is_error": True} if out.is_error else {})}

    async def aclose(self) -> None:
        await LOOP.run_async(self._aclose())

    async def _aclose(self) -> None:
        await self.registry.close_all()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def close(self) -> None:
        LOOP.run(self.aclose())


class _Error(BaseModel):
    error: str


def _error_outcome(message: str) -> Outcome:
    return Outcome(_Error(error=message), message, is_error=True)


_DEFAULT: dict[str, AgentTools] = {}


def dispatch(name: str, arguments: Any) -> dict[str, Any]:
    """`AgentTools().dispatch` with SBX_URL / SBX_TOKEN, one instance per process."""
    tools = _DEFAULT.get("default")
    if tools is None:
        tools = _DEFAULT["default"] = AgentTools()
    return tools.dispatch(name, arguments)
