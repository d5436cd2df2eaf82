"""One level-based, idempotent reconcile per kind: snapshot, build desired children,
apply them, compute status, patch it only when it changed."""
