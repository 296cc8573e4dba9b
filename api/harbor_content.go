package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Harbor's repositories, artifacts and tags. Reads come from the applied
// state as the registry's do; changes go through the same state methods
// as a push or a delete through /v2/, so immutability, quotas and the
// indexes that list a manifest are enforced by the state, audited there,
// and replicated like any push or delete.

// HarborRepository is Harbor's Repository. Its name includes the project,
// as Harbor's does; its id is synthetic (stable, and taken by no
// endpoint).
type HarborRepository struct {
	ID            int64  `json:"id"`
	ProjectID     uint64 `json:"project_id"`
	Name          string `json:"name"`
	Description   string `json:"description"`
	ArtifactCount int64  `json:"artifact_count"`
	PullCount     int64  `json:"pull_count"`
	CreationTime  string `json:"creation_time"`
	UpdateTime    string `json:"update_time"`
}

// HarborArtifact is Harbor's Artifact. Accessories (signatures,
// attestations, SBOMs, other referrers) are not listed on their own but
// under their subject, with ?with_accessory=true.
type HarborArtifact struct {
	ID                int64             `json:"id"`
	Type              string            `json:"type"`
	MediaType         string            `json:"media_type"`
	ManifestMediaType string            `json:"manifest_media_type"`
	ArtifactType      string            `json:"artifact_type,omitempty"`
	ProjectID         uint64            `json:"project_id"`
	RepositoryID      int64             `json:"repository_id"`
	RepositoryName    string            `json:"repository_name"`
	Digest            string            `json:"digest"`
	Size              int64             `json:"size"`
	PushTime          string            `json:"push_time"`
	PullTime          string            `json:"pull_time"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	References        []HarborReference `json:"references,omitempty"`
	Tags              []HarborTag       `json:"tags"`
	Accessories       []HarborAccessory `json:"accessories,omitempty"`
}

// HarborTag is Harbor's Tag. Its push time is when it was last pointed.
type HarborTag struct {
	ID           int64  `json:"id"`
	RepositoryID int64  `json:"repository_id"`
	ArtifactID   int64  `json:"artifact_id"`
	Name         string `json:"name"`
	PushTime     string `json:"push_time"`
	PullTime     string `json:"pull_time"`
	Immutable    bool   `json:"immutable"`
	Signed       bool   `json:"signed"`
}

// HarborReference is a manifest an index lists.
type HarborReference struct {
	ParentID    int64  `json:"parent_id"`
	ChildID     int64  `json:"child_id"`
	ChildDigest string `json:"child_digest"`
	Platform    any    `json:"platform,omitempty"`
}

// HarborAccessory is Harbor's Accessory of an artifact.
type HarborAccessory struct {
	ID                int64  `json:"id"`
	ArtifactID        int64  `json:"artifact_id"`
	SubjectArtifactID int64  `json:"subject_artifact_id"`
	Size              int64  `json:"size"`
	Digest            string `json:"digest"`
	Type              string `json:"type"`
	Icon              string `json:"icon"`
	CreationTime      string `json:"creation_time"`
}

// HarborTagRequest is the body of POST .../tags: Harbor's Tag, of which
// only the name is the caller's (immutability comes from the project's
// rules, a signature from a signer).
type HarborTagRequest struct {
	ID           int64  `json:"id,omitempty"`
	RepositoryID int64  `json:"repository_id,omitempty"`
	ArtifactID   int64  `json:"artifact_id,omitempty"`
	Name         string `json:"name"`
	PushTime     string `json:"push_time,omitempty"`
	PullTime     string `json:"pull_time,omitempty"`
	Immutable    bool   `json:"immutable,omitempty"`
	Signed       bool   `json:"signed,omitempty"`
}

// harborRepo returns the full name of the path's repository. Harbor's
// clients URL-encode {repository_name} and encode its slashes twice
// (a%252Fb); the mux has decoded it once, so it is decoded once more
// (a%2Fb, or a plain name, is taken too).
func harborRepo(r *http.Request, project string) (string, error) {
	raw := r.PathValue("repository_name")
	rel, err := url.PathUnescape(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %q", oci.ErrNameInvalid, clip(raw, 64))
	}
	name := project + "/" + rel
	if err := oci.ValidateName(name); err != nil {
		return "", err
	}
	return name, nil
}

// content is one repository's artifacts, as a request about them sees
// them.
type content struct {
	h       *Handler
	project policy.Project
	repo    string
	arts    []policy.Artifact
	// subjectOf maps an accessory's digest to its subject's, and
	// accessories a subject to its accessories.
	subjectOf   map[oci.Digest]oci.Digest
	accessories map[oci.Digest][]policy.Artifact
}

// loadContent reads the artifacts of repo, a repository of proj (not
// found for a repository without any).
func (h *Handler) loadContent(ctx context.Context, proj policy.Project, repo string) (*content, error) {
	arts, err := h.store.Artifacts(ctx, repo)
	if err != nil {
		return nil, err
	}
	c := &content{h: h, project: proj, repo: repo, arts: arts,
		subjectOf: map[oci.Digest]oci.Digest{}, accessories: map[oci.Digest][]policy.Artifact{}}
	present := map[oci.Digest]bool{}
	for _, a := range arts {
		present[a.Digest] = true
	}
	for _, a := range arts {
		if s, ok := accessorySubject(a); ok && present[s] && s != a.Digest {
			c.subjectOf[a.Digest] = s
			c.accessories[s] = append(c.accessories[s], a)
		}
	}
	// Newest first, as Harbor lists them.
	slices.SortFunc(c.arts, func(a, b policy.Artifact) int {
		return cmp.Or(cmp.Compare(b.Pushed, a.Pushed), cmp.Compare(a.Digest, b.Digest))
	})
	return c, nil
}

// accessorySubject returns the subject of a, if a is an accessory: a
// referrer names it; a cosign signature, attestation or SBOM, or the
// referrers fallback index, is tagged after it (and has no other tag).
func accessorySubject(a policy.Artifact) (oci.Digest, bool) {
	if a.Subject != "" {
		return a.Subject, true
	}
	if len(a.Tags) == 0 {
		return "", false
	}
	var subject oci.Digest
	for _, t := range a.Tags {
		s, ok := policy.AccessoryOf(t)
		if !ok || (subject != "" && s != subject) {
			return "", false
		}
		subject = s
	}
	return subject, true
}

// accessoryType is Harbor's type of accessory a.
func accessoryType(a policy.Artifact) string {
	switch a.ArtifactType {
	case "application/vnd.dev.cosign.artifact.sig.v1+json":
		return "signature.cosign"
	case "application/vnd.cncf.notary.signature":
		return "signature.notation"
	case "application/vnd.goharbor.harbor.sbom.v1":
		return "sbom.harbor"
	}
	for _, t := range a.Tags {
		switch {
		case strings.HasSuffix(t, ".sig"):
			return "signature.cosign"
		case strings.HasSuffix(t, ".att"):
			return "attestation.cosign"
		case strings.HasSuffix(t, ".sbom"):
			return "sbom.cosign"
		}
	}
	return "subject.accessory"
}

// artifactKind is Harbor's coarse type of an artifact.
func artifactKind(a policy.Artifact) string {
	switch {
	case oci.IsIndexMediaType(a.MediaType),
		a.ArtifactType == "application/vnd.oci.image.config.v1+json",
		a.ArtifactType == "application/vnd.docker.container.image.v1+json":
		return "IMAGE"
	case a.ArtifactType == "application/vnd.cncf.helm.config.v1+json":
		return "CHART"
	case strings.HasPrefix(a.ArtifactType, "application/vnd.cnab"):
		return "CNAB"
	}
	return "UNKNOWN"
}

// isAccessory reports whether d is an accessory of another artifact of c.
func (c *content) isAccessory(d oci.Digest) bool {
	_, ok := c.subjectOf[d]
	return ok
}

// top returns c's artifacts that are not accessories, newest first.
func (c *content) top() []policy.Artifact {
	var out []policy.Artifact
	for _, a := range c.arts {
		if !c.isAccessory(a.Digest) {
			out = append(out, a)
		}
	}
	return out
}

// find returns the artifact a reference (a tag or a digest) names among
// c's: the tags are those the artifacts were read with, so a request
// sees one state of the repository.
func (c *content) find(ref string) (policy.Artifact, error) {
	var (
		d   oci.Digest
		err error
	)
	if oci.IsDigestReference(ref) {
		d, err = oci.ParseDigest(ref)
	} else {
		err = oci.ValidateTag(ref)
	}
	if err != nil {
		return policy.Artifact{}, err
	}
	for _, a := range c.arts {
		if (d != "" && a.Digest == d) || (d == "" && slices.Contains(a.Tags, ref)) {
			return a, nil
		}
	}
	return policy.Artifact{}, fmt.Errorf("artifact %s in %s: %w", clip(ref, 128), c.repo, oci.ErrNotFound)
}

// tags returns the tags of a.
func (c *content) tags(ctx context.Context, a policy.Artifact) ([]HarborTag, error) {
	signed := false
	for _, acc := range c.accessories[a.Digest] {
		signed = signed || strings.HasPrefix(accessoryType(acc), "signature.")
	}
	out := []HarborTag{}
	for _, t := range slices.Sorted(slices.Values(a.Tags)) {
		pushed := a.Pushed
		v, found, err := c.h.store.TagVersion(ctx, c.repo, t)
		if err != nil {
			return nil, err
		}
		if found && !v.IsZero() {
			pushed = v.Time().UnixNano()
		}
		_, immutable := policy.Immutable(c.project.Immutable, c.repo, t)
		out = append(out, HarborTag{
			ID: syntheticID(c.repo, t), RepositoryID: syntheticID(c.repo), ArtifactID: syntheticID(c.repo, string(a.Digest)),
			Name: t, PushTime: harborTime(pushed), PullTime: harborTime(a.Pulled), Immutable: immutable, Signed: signed,
		})
	}
	return out, nil
}

// view shows artifact a: with its tags unless withTag is false, with its
// accessories when withAccessory.
func (c *content) view(ctx context.Context, a policy.Artifact, withTag, withAccessory bool) (HarborArtifact, error) {
	id := syntheticID(c.repo, string(a.Digest))
	mediaType := a.ArtifactType
	if oci.IsIndexMediaType(a.MediaType) || mediaType == "" {
		mediaType = a.MediaType
	}
	v := HarborArtifact{
		ID: id, Type: artifactKind(a), MediaType: mediaType, ManifestMediaType: a.MediaType,
		ProjectID: c.project.ID, RepositoryID: syntheticID(c.repo), RepositoryName: c.repo,
		Digest: string(a.Digest), Size: a.Size, PushTime: harborTime(a.Pushed), PullTime: harborTime(a.Pulled),
	}
	if a.ArtifactType != "" && a.ArtifactType != mediaType {
		v.ArtifactType = a.ArtifactType
	}
	rec, payload, err := c.h.store.Manifest(ctx, c.repo, a.Digest)
	switch {
	case errors.Is(err, oci.ErrNotFound):
		// Deleted since the list was read: shown as listed.
	case err != nil:
		return HarborArtifact{}, err
	default:
		v.Annotations = rec.Annotations
		if len(rec.Children) > 0 {
			platforms := map[oci.Digest]json.RawMessage{}
			if m, err := oci.ParseManifest(rec.MediaType, payload); err == nil {
				for _, d := range m.Manifests {
					platforms[d.Digest] = d.Platform
				}
			}
			for _, ch := range rec.Children {
				ref := HarborReference{ParentID: id, ChildID: syntheticID(c.repo, string(ch)), ChildDigest: string(ch)}
				if p := platforms[ch]; len(p) > 0 {
					ref.Platform = p
				}
				v.References = append(v.References, ref)
			}
		}
	}
	if withTag {
		if v.Tags, err = c.tags(ctx, a); err != nil {
			return HarborArtifact{}, err
		}
	}
	if withAccessory {
		for _, acc := range c.accessories[a.Digest] {
			v.Accessories = append(v.Accessories, HarborAccessory{
				ID: syntheticID(c.repo, string(acc.Digest)), ArtifactID: syntheticID(c.repo, string(acc.Digest)),
				SubjectArtifactID: id, Size: acc.Size, Digest: string(acc.Digest), Type: accessoryType(acc),
				CreationTime: harborTime(acc.Pushed),
			})
		}
	}
	return v, nil
}

// queryFlag reads a boolean query parameter with a default.
func queryFlag(r *http.Request, name string, def bool) (bool, error) {
	v, set, err := queryBool(r, name)
	if !set || err != nil {
		return def, err
	}
	return v, nil
}

// viewFlags reads what an artifact's view shows: its tags (unless
// ?with_tag=false) and its accessories (?with_accessory=true).
func viewFlags(r *http.Request) (withTag, withAccessory bool, err error) {
	if withTag, err = queryFlag(r, "with_tag", true); err != nil {
		return false, false, err
	}
	withAccessory, err = queryFlag(r, "with_accessory", false)
	return withTag, withAccessory, err
}

// --- repositories

// harborListRepositories answers GET /projects/{p}/repositories: a page
// of them (?q=name=~x or name=x, on the full name), with X-Total-Count
// and Link.
func (h *Handler) harborListRepositories(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	page, size, terms, err := harborListQuery(r, "name")
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	shown := newWindow[string](page, size)
	err = h.eachRepository(ctx, pa.Name, func(name string) {
		if t, ok := terms["name"]; !ok || t.matches(name) {
			shown.add(name)
		}
	})
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	proj, err := h.store.Project(ctx, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	out := []HarborRepository{}
	for _, name := range shown.items {
		v, err := h.harborRepository(ctx, proj, name)
		if errors.Is(err, oci.ErrNotFound) {
			// Emptied since it was listed.
			v, err = HarborRepository{ID: syntheticID(name), ProjectID: proj.ID, Name: name}, nil
		}
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		out = append(out, v)
	}
	setPaging(w, r, shown.total, page, size)
	writeJSON(w, http.StatusOK, out)
}

// harborRepository shows repository name of proj: its artifacts (not
// counting accessories), their pulls, its first and last push.
func (h *Handler) harborRepository(ctx context.Context, proj policy.Project, name string) (HarborRepository, error) {
	c, err := h.loadContent(ctx, proj, name)
	if err != nil {
		return HarborRepository{}, err
	}
	v := HarborRepository{ID: syntheticID(name), ProjectID: proj.ID, Name: name}
	var first, last int64
	for _, a := range c.arts {
		v.PullCount += a.PullCount
		if first == 0 || a.Pushed < first {
			first = a.Pushed
		}
		last = max(last, a.Pushed)
		if !c.isAccessory(a.Digest) {
			v.ArtifactCount++
		}
	}
	v.CreationTime, v.UpdateTime = harborTime(first), harborTime(last)
	return v, nil
}

func (h *Handler) harborGetRepository(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	repo, err := harborRepo(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	v, err := h.harborRepository(r.Context(), proj, repo)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// harborDeleteRepository deletes every artifact of a repository, indexes
// before what they list. A repository with an immutable tag is refused
// (412) before anything is deleted.
func (h *Handler) harborDeleteRepository(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	repo, err := harborRepo(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	arts, err := h.store.Artifacts(ctx, repo)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	var ds []oci.Digest
	for _, a := range arts {
		if a.Immutable {
			h.harborFail(w, r, fmt.Errorf("repository %s: artifact %s has an immutable tag: %w", repo, a.Digest, policy.ErrImmutable))
			return
		}
		ds = append(ds, a.Digest)
	}
	if err := h.deleteManifests(ctx, repo, ds); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

// deleteManifests deletes the manifests ds of repo. One that an index
// still lists is refused by the state: it is tried again once others
// (the index) are gone, until a round deletes nothing.
func (h *Handler) deleteManifests(ctx context.Context, repo string, ds []oci.Digest) error {
	for len(ds) > 0 {
		var (
			left    []oci.Digest
			refused error
		)
		for _, d := range ds {
			err := h.store.DeleteManifest(ctx, repo, d)
			switch {
			case err == nil, errors.Is(err, oci.ErrNotFound):
			case errors.Is(err, oci.ErrDenied) && !errors.Is(err, policy.ErrImmutable):
				left, refused = append(left, d), err
			default:
				return err
			}
		}
		if len(left) == len(ds) {
			return refused
		}
		ds = left
	}
	return nil
}

// --- artifacts

// harborListArtifacts answers GET .../artifacts: a page of the
// repository's artifacts, newest first, with their tags (unless
// ?with_tag=false) and accessories (?with_accessory=true); ?q= filters
// by tags (tags=* tagged, tags=nil untagged, tags=v, tags=~v) or digest.
func (h *Handler) harborListArtifacts(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	page, size, terms, err := harborListQuery(r, "tags", "digest")
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	withTag, withAccessory, err := viewFlags(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	repo, err := harborRepo(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	proj, err := h.store.Project(ctx, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	c, err := h.loadContent(ctx, proj, repo)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	arts := slices.DeleteFunc(c.top(), func(a policy.Artifact) bool { return !selects(terms, a) })
	out := []HarborArtifact{}
	for _, a := range pageOf(arts, page, size) {
		v, err := c.view(ctx, a, withTag, withAccessory)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		out = append(out, v)
	}
	setPaging(w, r, len(arts), page, size)
	writeJSON(w, http.StatusOK, out)
}

// selects reports whether the ?q= terms select artifact a.
func selects(terms map[string]queryTerm, a policy.Artifact) bool {
	if t, ok := terms["digest"]; ok && !t.matches(string(a.Digest)) {
		return false
	}
	t, ok := terms["tags"]
	switch {
	case !ok:
		return true
	case !t.fuzzy && t.value == "*":
		return len(a.Tags) > 0
	case !t.fuzzy && t.value == "nil":
		return len(a.Tags) == 0
	}
	return slices.ContainsFunc(a.Tags, t.matches)
}

// inRepository loads the path's repository and the artifact its
// {reference} names.
func (h *Handler) inRepository(r *http.Request, project string) (*content, policy.Artifact, error) {
	repo, err := harborRepo(r, project)
	if err != nil {
		return nil, policy.Artifact{}, err
	}
	proj, err := h.store.Project(r.Context(), project)
	if err != nil {
		return nil, policy.Artifact{}, err
	}
	c, err := h.loadContent(r.Context(), proj, repo)
	if err != nil {
		return nil, policy.Artifact{}, err
	}
	a, err := c.find(r.PathValue("reference"))
	return c, a, err
}

func (h *Handler) harborGetArtifact(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	withTag, withAccessory, err := viewFlags(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	c, a, err := h.inRepository(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	v, err := c.view(r.Context(), a, withTag, withAccessory)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// harborDeleteArtifact deletes an artifact (named by a tag or its
// digest) with all its tags, then its accessories, as Harbor does. An
// immutable tag refuses it (412); an index that lists it, 409.
func (h *Handler) harborDeleteArtifact(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	c, a, err := h.inRepository(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if err := h.store.DeleteManifest(ctx, c.repo, a.Digest); err != nil {
		h.harborFail(w, r, err)
		return
	}
	var accs []oci.Digest
	for next := []oci.Digest{a.Digest}; len(next) > 0; {
		s := next[0]
		next = next[1:]
		for _, acc := range c.accessories[s] {
			accs = append(accs, acc.Digest)
			next = append(next, acc.Digest)
		}
	}
	if err := h.deleteManifests(ctx, c.repo, accs); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

// --- tags

// harborListTags answers GET .../artifacts/{reference}/tags: a page of
// the artifact's tags by name (?q=name=x or name=~x).
func (h *Handler) harborListTags(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	page, size, terms, err := harborListQuery(r, "name")
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	c, a, err := h.inRepository(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	tags, err := c.tags(r.Context(), a)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if t, ok := terms["name"]; ok {
		tags = slices.DeleteFunc(tags, func(tg HarborTag) bool { return !t.matches(tg.Name) })
	}
	setPaging(w, r, len(tags), page, size)
	writeJSON(w, http.StatusOK, pageOf(tags, page, size))
}

// harborCreateTag answers POST .../artifacts/{reference}/tags: a new tag
// points at the artifact, written as a push of that tag (audited,
// replicated, versioned). A tag of that name in the repository already is
// 409, as in Harbor; should one appear meanwhile, the state still refuses
// to move it if it is immutable.
func (h *Handler) harborCreateTag(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	var req HarborTagRequest
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	if req.Immutable || req.Signed {
		h.harborFail(w, r, invalid("immutable and signed are not the caller's: immutability comes from the project's rules"))
		return
	}
	if err := oci.ValidateTag(req.Name); err != nil {
		h.harborFail(w, r, err)
		return
	}
	c, a, err := h.inRepository(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	switch d, err := h.store.Tag(ctx, c.repo, req.Name); {
	case err == nil:
		h.harborFail(w, r, fmt.Errorf("tag %s exists in %s (on %s): %w", req.Name, c.repo, d, policy.ErrExists))
		return
	case !errors.Is(err, oci.ErrNotFound):
		h.harborFail(w, r, err)
		return
	}
	rec, payload, err := h.store.Manifest(ctx, c.repo, a.Digest)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if err := h.store.PutManifest(ctx, rec, payload, req.Name, oci.TagVersion{}); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusCreated)
}

// harborDeleteTag deletes a tag of the artifact the reference names (not
// found if the tag is not on it); the artifact stays. The delete is
// conditional on the tag still pointing there.
func (h *Handler) harborDeleteTag(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	c, a, err := h.inRepository(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	tag := r.PathValue("tag_name")
	if !slices.Contains(a.Tags, tag) {
		h.harborFail(w, r, fmt.Errorf("tag %s of artifact %s in %s: %w", clip(tag, 128), a.Digest, c.repo, oci.ErrNotFound))
		return
	}
	if err := h.store.DeleteTag(r.Context(), c.repo, tag, oci.TagVersion{}, a.Digest); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}
