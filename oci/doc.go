// Package oci is berth's model of OCI content: digests, repository names and
// tags, manifests and descriptors, and the manifest record the state machine
// keeps. It is pure — no I/O — and is the one package that both cluster and
// registry import, so that neither has to import the other.
package oci
