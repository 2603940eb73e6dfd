"""agentgov: a Kubernetes operator and policy sidecar for governed AI agents."""

__version__ = "0.1.0"
