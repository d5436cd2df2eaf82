"""Test harness: a real local Kubernetes control plane (see README.md in this directory).

Deliberately empty of imports: importing one harness module (or the pod runner package
next to it) must not pull in the others.
"""
