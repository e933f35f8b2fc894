"""An OpenAI Agents SDK agent with the sandbox tools as function tools.

    pip install openai-agents
    sbx serve &                          # once; SBX_URL / SBX_TOKEN point the tools at it
    OPENAI_API_KEY=... python examples/agent_openai_agents.py "how many primes below 10^6?"

The tool definitions are `openai_responses_tools(strict=True)` (strict mode schemas);
`invoke` is the whole tool side: the Agents SDK hands it the model's JSON arguments.
(The Agents SDK can also connect to `sbx mcp` or /mcp directly with MCPServerStdio /
MCPServerStreamableHttp.)
"""

from __future__ import annotations

import json
import sys

from agent_tools import AgentTools, openai_responses_tools


async def invoke(tools: AgentTools, name: str, arguments_json: str) -> str:
    """Execute one function call; the string goes back to the model."""
    return json.dumps(await tools.adispatch(name, arguments_json))


def function_tools(tools: AgentTools) -> list:
    from agents import FunctionTool

    def make(defn: dict) -> FunctionTool:
        async def on_invoke(_ctx, arguments_json: str, name=defn["name"]) -> str:
            return await invoke(tools, name, arguments_json)

        return FunctionTool(name=defn["name"], description=defn["description"],
                            params_json_schema=defn["parameters"], on_invoke_tool=on_invoke,
                            strict_json_schema=True)

    return [make(d) for d in openai_responses_tools(strict=True)]


def main(prompt: str) -> None:
    from agents import Agent, Runner

    tools = AgentTools()
    try:
        agent = Agent(name="coder", tools=function_tools(tools),
                      instructions="Answer by running code in the sandbox tools.")
        print(Runner.run_sync(agent, prompt).final_output)
    finally:
        tools.close()  # destroys the sandboxes this run created


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "Compute the 20th Fibonacci number with Python.")
