package cluster

import (
	"encoding/binary"
	"strings"
)

// The state machine's bbolt buckets. Composite keys join their parts with
// sep (0x00), which cannot occur in a repository name, tag or digest (apply
// validates all three), so a prefix scan of "a\x00" never reaches "ab\x00".
var (
	bucketMeta         = []byte("meta")           // applied index and term; not part of StateHash
	bucketRepos        = []byte("repos")          // repo → number of manifests (uint64)
	bucketManifests    = []byte("manifests")      // repo·digest → oci.Record (JSON)
	bucketPayloads     = []byte("payloads")       // repo·digest → manifest bytes
	bucketTags         = []byte("tags")           // repo·tag → digest
	bucketTagsByDigest = []byte("tags_by_digest") // repo·digest·tag → ""
	bucketReferrers    = []byte("referrers")      // repo·subject·referrer → oci.Descriptor (JSON)
	bucketChildren     = []byte("children")       // repo·child·index → ""
	bucketBlobRefs     = []byte("blob_refs")      // digest → manifests referencing it, all repos (uint64, absent at 0)
	bucketRepoBlobRefs = []byte("repo_blob_refs") // repo·digest → manifests of repo referencing it (uint64, absent at 0)
	bucketLinks        = []byte("links")          // repo·digest → size, time (2×uint64)
	bucketLinksByBlob  = []byte("links_by_blob")  // digest·repo → ""
	bucketUsers        = []byte("users")          // name → user (JSON)

	// Replication. Ids are uint64 sequences (meta), keyed big-endian so
	// that byte order is id order; "id" below is those 8 bytes.
	bucketTagVersions  = []byte("tag_versions")  // repo·tag → oci.TagVersion (JSON); absent: unversioned
	bucketTombstones   = []byte("tombstones")    // repo·tag → policy.Tombstone (JSON)
	bucketEndpoints    = []byte("endpoints")     // name → policy.Endpoint (JSON)
	bucketRules        = []byte("rules")         // name → policy.Rule (JSON)
	bucketExecutions   = []byte("executions")    // id → execution (JSON)
	bucketExecRunning  = []byte("exec_running")  // id → "" while the execution runs
	bucketRuleExecs    = []byte("rule_execs")    // rule·id → ""
	bucketExecTokens   = []byte("exec_tokens")   // start_execution token → id
	bucketTasks        = []byte("tasks")         // id → policy.Task (JSON)
	bucketTasksActive  = []byte("tasks_active")  // id → "" while pending, running or retrying
	bucketTasksRunning = []byte("tasks_running") // id → "" while running
	bucketExecTasks    = []byte("exec_tasks")    // exec id · task id (16 bytes) → ""
	bucketTaskLatest   = []byte("task_latest")   // rule·repo·ref → id of the newest task

	// Access (see access.go): projects, members, accounts, token keys,
	// the audit log and pull counts.
	bucketProjects      = []byte("projects")        // name → policy.Project (JSON)
	bucketProjectIDs    = []byte("project_ids")     // id → name
	bucketProjectUsage  = []byte("project_usage")   // name → policy.Usage (JSON)
	bucketProjectBlobs  = []byte("project_blobs")   // project·digest → manifests of the project referencing it (uint64)
	bucketBlobSizes     = []byte("blob_sizes")      // digest → size (uint64), set by link_blob
	bucketMembers       = []byte("members")         // project·user → role
	bucketMembersByUser = []byte("members_by_user") // user·project → ""
	bucketUserIDs       = []byte("user_ids")        // id → name
	bucketRobots        = []byte("robots")          // name → robot (JSON)
	bucketRobotIDs      = []byte("robot_ids")       // id → name
	bucketTokenKeys     = []byte("token_keys")      // kid → token key (JSON)
	bucketAudit         = []byte("audit")           // id → policy.AuditEvent (JSON)
	bucketAuditProject  = []byte("audit_project")   // project·id → ""
	bucketPulls         = []byte("pulls")           // repo·digest → pull count and last time (2×uint64)
	bucketRetention     = []byte("retention_runs")  // project·id → retention run (JSON)

	allBuckets = [][]byte{
		bucketMeta, bucketRepos, bucketManifests, bucketPayloads, bucketTags,
		bucketTagsByDigest, bucketReferrers, bucketChildren, bucketBlobRefs,
		bucketRepoBlobRefs, bucketLinks, bucketLinksByBlob, bucketUsers,
		bucketTagVersions, bucketTombstones, bucketEndpoints, bucketRules,
		bucketExecutions, bucketExecRunning, bucketRuleExecs, bucketExecTokens,
		bucketTasks, bucketTasksActive, bucketTasksRunning, bucketExecTasks,
		bucketTaskLatest,
		bucketProjects, bucketProjectIDs, bucketProjectUsage, bucketProjectBlobs,
		bucketBlobSizes, bucketMembers, bucketMembersByUser, bucketUserIDs,
		bucketRobots, bucketRobotIDs, bucketTokenKeys, bucketAudit,
		bucketAuditProject, bucketPulls, bucketRetention,
	}

	metaAppliedIndex = []byte("applied_index")
	metaAppliedTerm  = []byte("applied_term")
	metaExecSeq      = []byte("exec_seq") // last execution id
	metaTaskSeq      = []byte("task_seq") // last task id
	metaProjectSeq   = []byte("project_seq")
	metaUserSeq      = []byte("user_seq")
	metaRobotSeq     = []byte("robot_seq")
	metaAuditSeq     = []byte("audit_seq")
	metaTokenKey     = []byte("token_key") // kid of the current token signing key
)

const sep = "\x00"

// key joins parts with sep.
func key(parts ...string) []byte {
	return []byte(strings.Join(parts, sep))
}

// prefix is key(parts...) followed by sep: every key one part longer.
func prefix(parts ...string) []byte {
	return append(key(parts...), sep...)
}

func encodeUint(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// decodeUint reads a big-endian uint64; anything else counts as 0.
func decodeUint(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// encodePair is a value of two uint64s, as decodePair reads it.
func encodePair(a, b uint64) []byte { return idKey(a, b) }

// decodePair reads what encodePair wrote; anything else counts as 0, 0.
func decodePair(v []byte) (a, b uint64) {
	if len(v) != 16 {
		return 0, 0
	}
	return decodeUint(v[:8]), decodeUint(v[8:])
}

// idKey joins ids, each as 8 big-endian bytes.
func idKey(ids ...uint64) []byte {
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	return b
}

// hasSep reports whether s would break composite keys.
func hasSep(s string) bool { return strings.Contains(s, sep) }
