"""Test harness: real parts started privately for integration tests (a private dockerd, the demo
app's images). Nothing here touches the default Docker socket."""
