"""Everything ``agentgov demo`` runs on one machine, with no cluster and no provider account.

- ``model``: a local OpenAI-compatible stand-in model (chat completions, streaming included,
  embeddings, the model list) with latency, failure and hang knobs, used by the demo, the tests
  and the benchmarks;
- ``agent``: the small example agent the sidecar fronts.

This package sits above the sidecar and the API (it may start a sidecar) and below the CLI;
nothing in the sidecar or the controller may import it.
"""
