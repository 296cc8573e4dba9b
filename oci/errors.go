package oci

import "errors"

// Errors shared by every package that handles OCI content. The registry maps
// each to its OCI error code in one table (registry/errors.go); the state
// machine returns them wrapped with context.
var (
	// ErrDigestInvalid: a digest is malformed, of an unsupported algorithm,
	// or does not match the content.
	ErrDigestInvalid = errors.New("digest invalid")
	// ErrNameInvalid: a repository name breaks the distribution spec's grammar.
	ErrNameInvalid = errors.New("repository name invalid")
	// ErrTagInvalid: a tag breaks the spec's grammar.
	ErrTagInvalid = errors.New("tag invalid")
	// ErrManifestInvalid: a manifest is not valid JSON, too large, or its
	// media type is inconsistent with its Content-Type.
	ErrManifestInvalid = errors.New("manifest invalid")
	// ErrManifestBlobUnknown: a manifest references a blob or child manifest
	// that the repository does not have.
	ErrManifestBlobUnknown = errors.New("manifest references unknown blob")
	// ErrNotFound: the manifest, tag, repository or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnsupported: the operation or media type is not supported.
	ErrUnsupported = errors.New("unsupported")
	// ErrDenied: the operation is refused by a rule (for example deleting a
	// manifest that an index still references).
	ErrDenied = errors.New("denied")
	// ErrUnavailable: the write cannot be made now (no leader, no quorum,
	// shutting down); the client may retry. The registry answers 503.
	ErrUnavailable = errors.New("temporarily unavailable")
	// ErrSuperseded: a versioned write of a tag (replication between berth
	// clusters) is older than the version the receiver holds, or than the
	// tombstone of a later delete. The registry answers 409 with the
	// version it holds; the sender counts its task as done.
	ErrSuperseded = errors.New("superseded by a newer version")
	// ErrPreconditionFailed: a conditional write found the state changed
	// (a delete by tag whose tag no longer points to the expected digest).
	ErrPreconditionFailed = errors.New("precondition failed")
)
