package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
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

	// Replication (see replication.go and outbox.go).
	opPutEndpoint     = "put_endpoint"
	opDeleteEndpoint  = "delete_endpoint"
	opPutRule         = "put_rule"
	opDeleteRule      = "delete_rule"
	opStartExecution  = "start_execution"
	opAddTasks        = "add_tasks"
	opClaimTasks      = "claim_tasks"
	opUpdateTasks     = "update_tasks"
	opStopExecution   = "stop_execution"
	opPruneHistory    = "prune_history"
	opPurgeTombstones = "purge_tombstones"

	// Access (see access.go).
	opPutProject      = "put_project"
	opDeleteProject   = "delete_project"
	opPutMember       = "put_member"
	opDeleteMember    = "delete_member"
	opCreateUser      = "create_user"
	opUpdateUser      = "update_user"
	opSetPassword     = "set_password"
	opSetAdmin        = "set_admin"
	opDeleteUser      = "delete_user"
	opPutRobot        = "put_robot"
	opDeleteRobot     = "delete_robot"
	opPutTokenKey     = "put_token_key"
	opAppendAudit     = "append_audit"
	opPruneAudit      = "prune_audit"
	opPutRetentionRun = "put_retention_run"
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
	// Time is the proposer's clock, unix nanoseconds: the link time
	// (link_blob), GC's cutoff (unlink_blobs), the time of a write for tag
	// versions and tombstones (put_manifest, delete_tag, delete_manifest),
	// "now" of the replication ops, and the cutoff of prune_history and
	// purge_tombstones.
	Time int64 `json:"time,omitempty"`

	// put_manifest, delete_tag, delete_manifest: Origin is the proposer's
	// cluster id, the origin of the versions a local write gets (absent
	// in commands from before versions: such a write leaves the tag
	// unversioned). Version is a replicated write's version (zero: a local
	// write). IfDigest makes delete_tag conditional.
	Origin   string         `json:"origin,omitempty"`
	Version  oci.TagVersion `json:"version,omitzero"`
	IfDigest oci.Digest     `json:"if_digest,omitempty"`

	// unlink_blobs
	Digests []oci.Digest `json:"digests,omitempty"`

	// put_user; the name of the endpoint or rule of delete_endpoint,
	// delete_rule and start_execution
	Name  string `json:"name,omitempty"`
	Hash  []byte `json:"hash,omitempty"`
	Admin bool   `json:"admin,omitempty"`

	// put_endpoint, put_rule
	Endpoint *policy.Endpoint `json:"endpoint,omitempty"`
	Rule     *policy.Rule     `json:"rule,omitempty"`

	// start_execution (Trigger, Token: a proposer's unique id that makes a
	// repeat a no-op and lets it find the execution), add_tasks and
	// stop_execution (Exec); Done: no more tasks will be added.
	Exec    uint64        `json:"exec,omitempty"`
	Trigger string        `json:"trigger,omitempty"`
	Token   string        `json:"token,omitempty"`
	Tasks   []policy.Task `json:"tasks,omitempty"`
	Done    bool          `json:"done,omitempty"`

	// claim_tasks: the claiming node, the claim id, at most how many tasks,
	// and the end of the lease (unix nanoseconds).
	Node  string `json:"node,omitempty"`
	Claim string `json:"claim,omitempty"`
	Max   int    `json:"max,omitempty"`
	Until int64  `json:"until,omitempty"`

	// update_tasks
	Updates []policy.TaskUpdate `json:"updates,omitempty"`

	// prune_history, prune_audit: how many final executions or audit
	// events to keep at most (0: no bound).
	Keep int `json:"keep,omitempty"`

	// Access. Create: the object must not exist yet (put_project,
	// put_member, put_robot), or, for put_token_key, add the key only if
	// there is none. Fields names what update of a project changes
	// (projectFields).
	Project  *policy.Project      `json:"project,omitempty"`
	Fields   []string             `json:"fields,omitempty"`
	Member   *policy.Member       `json:"member,omitempty"`
	User     *policy.User         `json:"user,omitempty"`
	Robot    *policy.Robot        `json:"robot,omitempty"`
	TokenKey *TokenKey            `json:"token_key,omitempty"`
	Run      *policy.RetentionRun `json:"run,omitempty"`
	Create   bool                 `json:"create,omitempty"`
	// IfUpdated makes an update of a project conditional: it applies only
	// while the project's Updated is still this (a read-modify-write of
	// its rules through two nodes at once loses neither change).
	IfUpdated int64 `json:"if_updated,omitempty"`
	// Audit is the audit event of the change this command makes, written
	// with it; Events are events of their own (append_audit); Pulls count
	// pulls (append_audit).
	Audit  *policy.AuditEvent  `json:"audit,omitempty"`
	Events []policy.AuditEvent `json:"events,omitempty"`
	Pulls  []PullCount         `json:"pulls,omitempty"`
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
