package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"go.etcd.io/bbolt"
)

// maxUserName bounds a user name in the state machine.
const maxUserName = 256

// writer applies one command inside a write transaction. Every operation
// first reads and validates, and returns a rejection (an error that is not
// a *storageError) before its first write; from then on a bbolt error is
// kept in err and surfaces as a *storageError.
type writer struct {
	tx  *bbolt.Tx
	err error

	now   int64         // the command's Time
	rules []policy.Rule // every rule, read once per command (see allRules)
	read  bool          // rules was read
}

// applyCommand decodes and applies one command. It is deterministic: the
// result depends only on data and the state in tx. The blobs of a manifest
// it stores are appended to *blobs (nil: not wanted), for blob repair.
func applyCommand(tx *bbolt.Tx, data []byte, blobs *[]oci.Digest) error {
	c, err := decodeCommand(data)
	if err != nil {
		return err
	}
	w := &writer{tx: tx, now: c.Time}
	switch c.Op {
	case opPutManifest:
		err = w.putManifest(c)
		if err == nil && blobs != nil && c.Record != nil {
			*blobs = append(*blobs, c.Record.Blobs...)
		}
	case opDeleteManifest:
		err = w.deleteManifest(c)
	case opDeleteTag:
		err = w.deleteTag(c)
	case opLinkBlob:
		err = w.linkBlob(c.Repo, c.Digest, c.Size, c.Time)
	case opUnlinkBlob:
		err = w.unlinkBlob(c.Repo, c.Digest)
	case opUnlinkBlobs:
		err = w.unlinkBlobs(c.Digests, c.Time)
	case opPutUser:
		err = w.putUser(c)
	case opPutProject:
		err = w.putProject(c)
	case opDeleteProject:
		err = w.deleteProject(c)
	case opPutMember:
		err = w.putMember(c)
	case opDeleteMember:
		err = w.deleteMember(c)
	case opCreateUser:
		err = w.createUser(c)
	case opUpdateUser:
		err = w.updateUser(c)
	case opSetPassword:
		err = w.setPassword(c)
	case opSetAdmin:
		err = w.setAdmin(c)
	case opDeleteUser:
		err = w.deleteUser(c)
	case opPutRobot:
		err = w.putRobot(c)
	case opDeleteRobot:
		err = w.deleteRobot(c)
	case opPutTokenKey:
		err = w.putTokenKey(c)
	case opAppendAudit:
		err = w.appendAudit(c)
	case opPruneAudit:
		err = w.pruneAudit(c)
	case opPutRetentionRun:
		err = w.putRetentionRun(c)
	case opPutEndpoint:
		if err = w.putEndpoint(c.Endpoint); err == nil {
			w.audit(c)
		}
	case opDeleteEndpoint:
		if err = w.deleteEndpoint(c.Name); err == nil {
			w.audit(c)
		}
	case opPutRule:
		if err = w.putRule(c.Rule); err == nil {
			w.audit(c)
		}
	case opDeleteRule:
		if err = w.deleteRule(c.Name); err == nil {
			w.audit(c)
		}
	case opStartExecution:
		err = w.startExecution(c)
	case opAddTasks:
		err = w.addTasks(c)
	case opClaimTasks:
		err = w.claimTasks(c)
	case opUpdateTasks:
		err = w.updateTasks(c.Updates)
	case opStopExecution:
		err = w.stopExecution(c.Exec)
	case opPruneHistory:
		err = w.pruneHistory(c.Time, c.Keep)
	case opPurgeTombstones:
		err = w.purgeTombstones(c.Time)
	default:
		err = fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	if err != nil {
		return err
	}
	if w.err != nil {
		return &storageError{err: w.err}
	}
	return nil
}

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadCommand}, args...)...)
}

func checkRepo(repo string) error {
	if err := oci.ValidateName(repo); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return nil
}

func checkDigest(d oci.Digest) error {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return nil
}

func checkTag(tag string) error {
	if err := oci.ValidateTag(tag); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return nil
}

func (w *writer) get(bucket, k []byte) []byte {
	return w.tx.Bucket(bucket).Get(k)
}

func (w *writer) put(bucket, k, v []byte) {
	if w.err == nil {
		w.err = w.tx.Bucket(bucket).Put(k, v)
	}
}

func (w *writer) del(bucket, k []byte) {
	if w.err == nil {
		w.err = w.tx.Bucket(bucket).Delete(k)
	}
}

// getJSON decodes the value of k into v and reports whether there is one.
// A value that does not decode is a failure of the storage.
func (w *writer) getJSON(bucket, k []byte, v any) (bool, error) {
	b := w.get(bucket, k)
	if b == nil {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, &storageError{err: fmt.Errorf("decode %s %q: %w", bucket, k, err)}
	}
	return true, nil
}

// putJSON stores v encoded as JSON.
func (w *writer) putJSON(bucket, k []byte, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		if w.err == nil {
			w.err = fmt.Errorf("encode %s %q: %w", bucket, k, err)
		}
		return
	}
	w.put(bucket, k, b)
}

// add changes a counter by delta (±1); a counter is absent at zero and
// never goes below it.
func (w *writer) add(bucket, k []byte, delta int) {
	n := decodeUint(w.get(bucket, k))
	switch {
	case delta > 0:
		n++
	case n > 0:
		n--
	}
	if n == 0 {
		w.del(bucket, k)
		return
	}
	w.put(bucket, k, encodeUint(n))
}

// keysWithPrefix returns copies of the keys in bucket that start with p.
func (w *writer) keysWithPrefix(bucket, p []byte) [][]byte {
	var ks [][]byte
	c := w.tx.Bucket(bucket).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		ks = append(ks, bytes.Clone(k))
	}
	return ks
}

// record reads the stored record of (repo, digest).
func (w *writer) record(repo string, d oci.Digest) (oci.Record, bool, error) {
	v := w.get(bucketManifests, key(repo, string(d)))
	if v == nil {
		return oci.Record{}, false, nil
	}
	var r oci.Record
	if err := json.Unmarshal(v, &r); err != nil {
		return oci.Record{}, false, &storageError{err: fmt.Errorf("decode manifest %s in %s: %w", d, repo, err)}
	}
	return r, true, nil
}

func uniq(ds []oci.Digest) []oci.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return slices.Compact(out)
}

func (w *writer) putManifest(c command) error {
	r := c.Record
	if r == nil {
		return badf("put_manifest without a record")
	}
	if err := checkRepo(r.Repo); err != nil {
		return err
	}
	if err := checkDigest(r.Digest); err != nil {
		return err
	}
	if len(c.Payload) > oci.MaxManifestSize {
		return badf("manifest of %d bytes is larger than %d", len(c.Payload), oci.MaxManifestSize)
	}
	if !r.Digest.Verify(c.Payload) {
		return badf("payload does not match digest %s", r.Digest)
	}
	if r.Size != int64(len(c.Payload)) {
		return badf("size %d does not match the payload's %d bytes", r.Size, len(c.Payload))
	}
	if c.Tag != "" {
		if err := checkTag(c.Tag); err != nil {
			return err
		}
	}
	if err := checkVersioning(c); err != nil {
		return err
	}
	for _, d := range append(slices.Clone(r.Blobs), r.Children...) {
		if err := checkDigest(d); err != nil {
			return err
		}
	}
	if r.Subject != "" {
		if err := checkDigest(r.Subject); err != nil {
			return err
		}
	}
	// Every blob must belong to the repository when the manifest commits,
	// not only when the proposer checked: garbage collection unlinks old
	// blobs through the log before it deletes a file, so a manifest that
	// lost that race is refused here instead of referencing a blob that is
	// being deleted.
	for _, b := range uniq(r.Blobs) {
		k := key(r.Repo, string(b))
		if w.get(bucketLinks, k) == nil && w.get(bucketRepoBlobRefs, k) == nil {
			return fmt.Errorf("blob %s is not in %s: %w", b, r.Repo, oci.ErrManifestBlobUnknown)
		}
	}
	rec, err := json.Marshal(r)
	if err != nil {
		return badf("encode record: %v", err)
	}
	old, found, err := w.record(r.Repo, r.Digest)
	if err != nil {
		return err
	}
	var tw tagWrite
	if c.Tag != "" {
		if tw, err = w.tagPut(r.Repo, c.Tag, r.Digest, c); err != nil {
			return err
		}
	}
	quota, err := w.checkPush(*r, c.Tag, found)
	if err != nil {
		return err
	}

	if found {
		if err := w.unindex(old); err != nil {
			return err
		}
	} else {
		w.add(bucketRepos, []byte(r.Repo), +1)
	}
	if err := w.index(*r); err != nil {
		return err
	}
	if c.Audit != nil && (!found || tw.changed) {
		w.audit(c)
		w.warnQuota(quota, *c.Audit)
	}
	k := key(r.Repo, string(r.Digest))
	w.put(bucketManifests, k, rec)
	w.put(bucketPayloads, k, bytes.Clone(c.Payload))
	if c.Tag != "" {
		w.setTag(r.Repo, c.Tag, r.Digest)
		w.setVersion(r.Repo, c.Tag, tw.version)
		w.del(bucketTombstones, key(r.Repo, c.Tag))
	}
	return w.putEvents(*r, c.Tag, tw, !found)
}

// index adds the blob references, children and referrer entry of r, and
// r to its project's usage.
func (w *writer) index(r oci.Record) error {
	if err := w.account(r, +1); err != nil {
		return err
	}
	for _, b := range uniq(r.Blobs) {
		w.add(bucketBlobRefs, []byte(b), +1)
		w.add(bucketRepoBlobRefs, key(r.Repo, string(b)), +1)
	}
	for _, ch := range uniq(r.Children) {
		w.put(bucketChildren, key(r.Repo, string(ch), string(r.Digest)), []byte{})
	}
	if r.Subject != "" {
		desc, err := json.Marshal(r.Descriptor())
		if err != nil {
			return &storageError{err: fmt.Errorf("encode descriptor: %w", err)}
		}
		w.put(bucketReferrers, key(r.Repo, string(r.Subject), string(r.Digest)), desc)
	}
	return nil
}

// unindex removes what index(r) added.
func (w *writer) unindex(r oci.Record) error {
	if err := w.account(r, -1); err != nil {
		return err
	}
	for _, b := range uniq(r.Blobs) {
		w.add(bucketBlobRefs, []byte(b), -1)
		w.add(bucketRepoBlobRefs, key(r.Repo, string(b)), -1)
	}
	for _, ch := range uniq(r.Children) {
		w.del(bucketChildren, key(r.Repo, string(ch), string(r.Digest)))
	}
	if r.Subject != "" {
		w.del(bucketReferrers, key(r.Repo, string(r.Subject), string(r.Digest)))
	}
	return nil
}

// setTag points repo:tag at d, moving it off the digest it pointed to.
func (w *writer) setTag(repo, tag string, d oci.Digest) {
	tk := key(repo, tag)
	if prev := w.get(bucketTags, tk); prev != nil && string(prev) != string(d) {
		w.del(bucketTagsByDigest, key(repo, string(prev), tag))
	}
	w.put(bucketTags, tk, []byte(d))
	w.put(bucketTagsByDigest, key(repo, string(d), tag), []byte{})
}

func (w *writer) deleteManifest(c command) error {
	repo, d := c.Repo, c.Digest
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return err
	}
	if err := checkVersioning(c); err != nil {
		return err
	}
	r, found, err := w.record(repo, d)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("manifest %s in %s: %w", d, repo, oci.ErrNotFound)
	}
	p := prefix(repo, string(d))
	if k, _ := w.tx.Bucket(bucketChildren).Cursor().Seek(p); k != nil && bytes.HasPrefix(k, p) {
		index := string(k[len(p):])
		return fmt.Errorf("manifest is referenced by index %s in %s; delete the index first: %w", index, repo, oci.ErrDenied)
	}
	var tags []string
	for _, tk := range w.keysWithPrefix(bucketTagsByDigest, p) {
		tags = append(tags, string(tk[len(p):]))
	}
	if err := w.checkImmutableDelete(repo, tags); err != nil {
		return err
	}
	var deleted []policy.Tombstone
	for _, tag := range tags {
		cur, err := w.tagVersion(repo, tag)
		if err != nil {
			return err
		}
		deleted = append(deleted, policy.Tombstone{Repo: repo, Tag: tag, Digest: d, Version: localVersion(cur, c), Time: c.Time})
	}

	if err := w.unindex(r); err != nil {
		return err
	}
	k := key(repo, string(d))
	w.del(bucketManifests, k)
	w.del(bucketPayloads, k)
	w.del(bucketPulls, k)
	w.audit(c)
	for _, ts := range deleted {
		w.dropTag(ts)
	}
	w.add(bucketRepos, []byte(repo), -1)
	if len(deleted) == 0 {
		deleted = append(deleted, policy.Tombstone{Repo: repo, Digest: d})
	}
	return w.deleteEvents(deleted)
}

func (w *writer) deleteTag(c command) error {
	repo, tag := c.Repo, c.Tag
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := checkTag(tag); err != nil {
		return err
	}
	if c.IfDigest != "" {
		if err := checkDigest(c.IfDigest); err != nil {
			return err
		}
	}
	if err := checkVersioning(c); err != nil {
		return err
	}
	d := oci.Digest(w.get(bucketTags, key(repo, tag)))
	if d == "" {
		return fmt.Errorf("tag %s in %s: %w", tag, repo, oci.ErrNotFound)
	}
	if c.IfDigest != "" && d != c.IfDigest {
		return fmt.Errorf("tag %s in %s points to %s, not %s: %w", tag, repo, d, c.IfDigest, oci.ErrPreconditionFailed)
	}
	if err := w.checkImmutableDelete(repo, []string{tag}); err != nil {
		return err
	}
	cur, err := w.tagVersion(repo, tag)
	if err != nil {
		return err
	}
	v := c.Version
	switch {
	case v.IsZero():
		v = localVersion(cur, c)
	case v.Compare(cur) <= 0:
		return fmt.Errorf("delete %s:%s at version %s: the tag is at %s: %w", repo, tag, v, cur, oci.ErrSuperseded)
	}
	ts := policy.Tombstone{Repo: repo, Tag: tag, Digest: d, Version: v, Time: c.Time}
	w.dropTag(ts)
	w.audit(c)
	return w.deleteEvents([]policy.Tombstone{ts})
}

func (w *writer) linkBlob(repo string, d oci.Digest, size, at int64) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return err
	}
	if size < 0 {
		return badf("negative blob size %d", size)
	}
	if _, _, err := w.repoProject(repo); err != nil {
		return err
	}
	v := encodePair(uint64(size), uint64(at))
	// A digest names its content, so its size never changes: the first
	// size recorded stays, and project usage added with it is taken away
	// with the same number.
	if w.get(bucketBlobSizes, []byte(d)) == nil {
		w.put(bucketBlobSizes, []byte(d), encodeUint(uint64(size)))
	}
	w.put(bucketLinks, key(repo, string(d)), v)
	w.put(bucketLinksByBlob, key(string(d), repo), []byte{})
	return nil
}

// unlinkBlob drops repo's upload link of d (a blob DELETE). A blob that a
// manifest of repo references stays visible there; one that is neither
// linked nor referenced in repo is not found.
func (w *writer) unlinkBlob(repo string, d oci.Digest) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return err
	}
	k := key(repo, string(d))
	if w.get(bucketLinks, k) == nil {
		if w.get(bucketRepoBlobRefs, k) == nil {
			return fmt.Errorf("blob %s in %s: %w", d, repo, oci.ErrNotFound)
		}
		return nil
	}
	w.del(bucketLinks, k)
	w.del(bucketLinksByBlob, key(string(d), repo))
	w.forgetSize(d)
	return nil
}

// unlinkBlobs drops the repository links of the blobs ds that no manifest
// references, keeping links made at or after before (unix nanoseconds; 0
// drops every link). Garbage collection proposes it before it deletes the
// files, with its grace cutoff: a blob that another node linked again
// since keeps that link.
func (w *writer) unlinkBlobs(ds []oci.Digest, before int64) error {
	for _, d := range ds {
		if err := checkDigest(d); err != nil {
			return err
		}
	}
	for _, d := range uniq(ds) {
		if w.get(bucketBlobRefs, []byte(d)) != nil {
			continue // a manifest references it again
		}
		p := prefix(string(d))
		for _, lk := range w.keysWithPrefix(bucketLinksByBlob, p) {
			k := key(string(lk[len(p):]), string(d))
			if before != 0 && linkTime(w.get(bucketLinks, k)) >= before {
				continue
			}
			w.del(bucketLinks, k)
			w.del(bucketLinksByBlob, lk)
		}
		w.forgetSize(d)
	}
	return nil
}

// forgetSize drops the recorded size of d once no repository links it and
// no manifest references it.
func (w *writer) forgetSize(d oci.Digest) {
	if w.get(bucketBlobRefs, []byte(d)) != nil {
		return
	}
	p := prefix(string(d))
	if k, _ := w.tx.Bucket(bucketLinksByBlob).Cursor().Seek(p); k != nil && bytes.HasPrefix(k, p) {
		return
	}
	w.del(bucketBlobSizes, []byte(d))
}

// linkTime reads the time of a link value (size, time).
func linkTime(v []byte) int64 {
	_, at := decodePair(v)
	return int64(at)
}
