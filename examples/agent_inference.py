"""An agent and the inference endpoint it calls, on one machine, as one Modal program.

The model is VADER (vaderSentiment 3.3.2): a real sentiment model (a 7,500-entry lexicon
scored by rules, validated against human raters) shipped inside its PyPI wheel, so nothing
is downloaded at run time and it runs on CPU in milliseconds. It loads once per container
in `@modal.enter()`; the class serves it as a web endpoint. The agent (the local
entrypoint) asks the endpoint about each review over plain HTTP, then writes Python that
aggregates the scores and runs it in a gVisor sandbox, as an LLM agent's code tool would.

    sbx run examples/agent_inference.py        # or: sbx deploy, then POST to the URL
"""

import json
import urllib.request

import sandbox_service as modal

image = modal.Image.debian_slim().pip_install("vaderSentiment==3.3.2", "fastapi==0.115.6")
app = modal.App("agent-inference", image=image)

REVIEWS = [
    "The sandbox booted fast and the docs were great!",
    "Setup was confusing and the error messages were useless.",
    "It works. Nothing special.",
    "Absolutely love how easy the functions API is :)",
]


@app.cls(scaledown_window=120, block_network=True)
class Sentiment:
    @modal.enter()
    def load(self):
        import os
        import time

        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        t0 = time.perf_counter()
        self.model = SentimentIntensityAnalyzer()  # reads the lexicon: once per container
        self.load_ms = round((time.perf_counter() - t0) * 1000, 1)
        self.container = os.getpid()

    @modal.fastapi_endpoint(method="POST")
    def score(self, item: dict):
        scores = self.model.polarity_scores(item["text"])
        return {"compound": scores["compound"], "load_ms": self.load_ms,
                "container": self.container}


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


@app.local_entrypoint()
def main():
    url = Sentiment().score.get_web_url()
    print(f"endpoint: {url}")
    answers = [_post(url, {"text": review}) for review in REVIEWS]
    for review, a in zip(REVIEWS, answers):
        print(f"{a['compound']:+.3f}  {review}")
    print(f"model loads: {len({a['container'] for a in answers})}")  # one warm container
    # the agent's code tool: generated code runs in a sandbox, never on this machine
    code = ("import statistics\n"
            f"scores = {[a['compound'] for a in answers]!r}\n"
            "print(f'mean {statistics.mean(scores):+.3f}, positive "
            "{sum(s > 0.05 for s in scores)}/{len(scores)}')")
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        p = sb.exec("python3", "-c", code)
        print("sandbox:", p.stdout.read().strip())
        p.wait()
    finally:
        sb.terminate()
