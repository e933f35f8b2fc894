"""agent_tools definitions: one table generates the MCP tools, the OpenAI (plain and strict)
and Anthropic definitions, so they cannot drift; every input is described and bounded;
strict schemas follow OpenAI's strict-mode rules; dispatch validates arguments. The
examples' tool side runs against a real server with fake model responses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from types import SimpleNamespace


from agent_tools import (TOOLS, AgentTools, anthropic_tools, input_schema, openai_chat_tools,
                         openai_responses_tools, output_schema, strict_schema)
from sbxtest import REPO

sys.path.insert(0, os.path.join(REPO, "examples"))
NAMES = ["run_code", "create_sandbox", "exec_command", "read_file", "write_file", "list_files",
         "terminate_sandbox", "create_context", "run_in_context"]


def _bounded(prop: dict) -> bool:
    alts = [a for a in prop.get("anyOf", [prop]) if a.get("type") != "null"]
    for a in alts:
        t = a.get("type")
        if t == "string" and not ({"maxLength", "pattern", "enum"} & a.keys()):
            return False
        if t in ("number", "integer") and not ({"maximum", "exclusiveMaximum"} & a.keys()
                                              and {"minimum", "exclusiveMinimum"} & a.keys()):
            return False
        if t == "array" and "maxItems" not in a:
            return False
    return True


def test_names_descriptions_and_bounds():
    assert [t.name for t in TOOLS] == NAMES
    for t in TOOLS:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", t.name)
        schema = input_schema(t)
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (t.name, name)
            assert _bounded(prop), (t.name, name, prop)
        assert output_schema(t)["type"] == "object"


def test_every_surface_publishes_the_same_schema():
    from mcp import Client

    from agent_tools import create_mcp_server

    async def listed():
        server, _ = create_mcp_server()
        async with Client(server) as c:
            return (await c.list_tools()).tools

    mcp_tools = {t.name: t for t in asyncio.run(listed())}
    chat = {d["function"]["name"]: d["function"] for d in openai_chat_tools()}
    responses = {d["name"]: d for d in openai_responses_tools()}
    claude = {d["name"]: d for d in anthropic_tools()}
    for t in TOOLS:
        schema = input_schema(t)
        assert mcp_tools[t.name].input_schema == schema
        assert chat[t.name]["parameters"] == responses[t.name]["parameters"] == schema
        assert claude[t.name]["input_schema"] == schema
        assert (mcp_tools[t.name].description == chat[t.name]["description"]
                == claude[t.name]["description"] == t.description)
        out = mcp_tools[t.name].output_schema
        assert out is not None and set(out["properties"]) == set(output_schema(t)["properties"])


def _walk(schema):
    yield schema
    for v in schema.get("properties", {}).values():
        yield from _walk(v)
    for a in schema.get("anyOf", []):
        yield from _walk(a)
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"])


def test_strict_variant_follows_strict_mode_rules():
    for defs in (openai_chat_tools(strict=True), openai_responses_tools(strict=True)):
        for d in defs:
            fn = d.get("function", d)
            assert fn["strict"] is True
            s = fn["parameters"]
            assert s["additionalProperties"] is False
            assert set(s["required"]) == set(s["properties"])
            for node in _walk(s):
                assert not {"default", "minLength", "maxLength", "title"} & node.keys(), node
    # what was optional is nullable, and null means "use the default"
    s = strict_schema(input_schema(TOOLS[0]))
    assert {"type": "null"} in s["properties"]["timeout_s"]["anyOf"]
    assert {"type": "null"} in s["properties"]["sandbox_id"]["anyOf"]


def test_dispatch_refuses_bad_calls_with_actionable_errors():
    tools = AgentTools(url="http://127.0.0.1:9", token="x")  # never reached
    r = tools.dispatch("nope", {})
    assert r["is_error"] and "run_code" in r["error"]
    r = tools.dispatch("run_code", "{not json")
    assert r["is_error"] and "not valid JSON" in r["error"]
    r = tools.dispatch("run_code", {"code": "1", "timeout_s": 0})
    assert r["is_error"] and "timeout_s" in r["error"]
    r = tools.dispatch("exec_command", {"sandbox_id": "../../etc", "command": "x"})
    assert r["is_error"] and "sandbox_id" in r["error"]
    tools.close()


# ---- the examples' tool side, with fake model responses ----------------------------------
def test_claude_example_dispatches_tool_use_blocks(server):
    import agent_claude

    response = SimpleNamespace(content=[
        SimpleNamespace(type="text", text="let me run that"),
        SimpleNamespace(type="tool_use", id="toolu_1", name="run_code",
                        input={"code": "print(sum(range(10)))"})])
    tools = AgentTools(server.url, server.token)
    try:
        results = agent_claude.handle_tool_uses(tools, response)
    finally:
        tools.close()
    assert len(results) == 1 and results[0]["tool_use_id"] == "toolu_1"
    assert "is_error" not in results[0]
    assert json.loads(results[0]["content"][0]["text"])["stdout"] == "45\n"


def test_openai_agents_example_invokes_with_strict_arguments(server):
    import agent_openai_agents

    # strict mode: the model sends every property, null for "default"
    args = json.dumps({"code": "echo hi", "language": "bash", "sandbox_id": None,
                       "timeout_s": None, "max_output_chars": None})
    tools = AgentTools(server.url, server.token)
    try:
        out = json.loads(asyncio.run(agent_openai_agents.invoke(tools, "run_code", args)))
    finally:
        tools.close()
    assert out["stdout"] == "hi\n" and out["exit_code"] == 0


def test_langchain_example_runs_a_tool_call_over_mcp(server):
    import agent_langchain_mcp

    call = {"name": "run_code", "args": {"code": "print(2**10)"}, "id": "call_1"}
    result = asyncio.run(agent_langchain_mcp.run_tool_call(call, server.url, server.token))
    assert not result.is_error and result.structured_content["stdout"] == "1024\n"
