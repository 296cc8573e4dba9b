package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/berth-registry/berth/oci"
)

// Operations of the state machine. The names are part of the Raft log
// format: never rename one, only add.
const (
	opPutManifest    = "put_manifest"
	opDeleteManifest = "delete_manifest"
	opDeleteTag      = "delete_tag"
	opLinkBlob       = "link_blob"
	opUnlinkBlob     = "unlink_blob"
	opUnlinkBlobs    = "unlink_blobs"
	opPutUser        = "put_user"
)

// command is the envelope of every entry in the Raft log: a JSON object
// whose "op" says which of the other fields matter. Everything apply needs
// that is not a pure function of the state (times, password hashes) is
// chosen by the proposer and carried here.
type command struct {
	Op string `json:"op"`

	// put_manifest
	Record  *oci.Record `json:"record,omitempty"`
	Payload []byte      `json:"payload,omitempty"`

	// put_manifest (tag to set), delete_manifest, delete_tag, link_blob,
	// unlink_blob
	Repo   string     `json:"repo,omitempty"`
	Tag    string     `json:"tag,omitempty"`
	Digest oci.Digest `json:"digest,omitempty"`

	// link_blob
	Size int64 `json:"size,omitempty"`
	Time int64 `json:"time,omitempty"` // unix nanoseconds

	// unlink_blobs
	Digests []oci.Digest `json:"digests,omitempty"`

	// put_user
	Name  string `json:"name,omitempty"`
	Hash  []byte `json:"hash,omitempty"`
	Admin bool   `json:"admin,omitempty"`
}

func encodeCommand(c command) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Op, err)
	}
	return b, nil
}

func decodeCommand(b []byte) (command, error) {
	var c command
	if err := json.Unmarshal(b, &c); err != nil {
		return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}
