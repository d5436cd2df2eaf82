"""Pure builders: typed models in, Kubernetes manifests (plain dicts) out. No I/O, no
client imports (import-linter enforces it), so every manifest is unit-tested exactly."""
