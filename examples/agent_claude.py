"""A Claude tool-use loop with the sandbox tools (Anthropic Messages API).

    pip install anthropic
    sbx serve &                          # once; SBX_URL / SBX_TOKEN point the tools at it
    ANTHROPIC_API_KEY=... python examples/agent_claude.py "plot sin(x) and tell me its max"

`handle_tool_uses` is the whole tool side: it executes every tool_use block of a response
and returns the tool_result blocks (images included) for the next user turn.
"""

from __future__ import annotations

import sys

from agent_tools import AgentTools, anthropic_tools

MODEL = "claude-sonnet-4-5"


def handle_tool_uses(tools: AgentTools, response) -> list[dict]:
    """tool_result blocks for every tool_use block in `response.content`."""
    results = []
    for block in response.content:
        if getattr(block, "type", None) == "tool_use":
            results.append(tools.anthropic_result(block.id, block.name, block.input))
    return results


def main(prompt: str) -> None:
    import anthropic

    client = anthropic.Anthropic()
    tools = AgentTools()
    messages: list[dict] = [{"role": "user", "content": prompt}]
    try:
        for _ in range(20):
            response = client.messages.create(model=MODEL, max_tokens=4096, messages=messages,
                                              tools=anthropic_tools())
            messages.append({"role": "assistant", "content": response.content})
            if response.stop_reason != "tool_use":
                print("".join(b.text for b in response.content if b.type == "text"))
                return
            messages.append({"role": "user", "content": handle_tool_uses(tools, response)})
    finally:
        tools.close()  # destroys the sandboxes this run created


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "Compute the 20th Fibonacci number with Python.")
