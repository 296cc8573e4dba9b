package cluster

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// InternalPrefix is the path of the internal API, which nodes use to talk
// to each other. Every request must carry a signature of the cluster secret
// (see auth.go); it is not for clients.
const InternalPrefix = "/internal/v1/"

// InternalHandler serves the internal API: forwarded writes, read-index,
// status and membership changes, and (once AttachBlobs was called) blob
// transfers between peers. cmd mounts it at InternalPrefix on the HTTP
// server.
func (n *Node) InternalHandler() http.Handler {
	return http.HandlerFunc(n.serveInternal)
}

func (n *Node) serveInternal(w http.ResponseWriter, r *http.Request) {
	from, err := verify(r, n.keys.api, time.Now())
	if err != nil {
		writeWire(w, http.StatusUnauthorized, wireReply{Error: toWire(err)})
		return
	}
	_ = from
	path := strings.TrimPrefix(r.URL.Path, InternalPrefix)
	switch {
	case path == "apply" && r.Method == http.MethodPost:
		n.serveApply(w, r)
	case path == "readindex" && r.Method == http.MethodGet:
		idx, err := n.LeaderReadIndex(r.Context())
		replyErr(w, wireReply{Index: idx}, err)
	case path == "status" && r.Method == http.MethodGet:
		st, err := n.LocalStatus(r.Context(), r.URL.Query().Get("hash") == "true")
		replyErr(w, wireReply{Node: &st}, err)
	case path == "remove" && r.Method == http.MethodPost:
		err := n.LeaderRemoveServer(r.Context(), r.URL.Query().Get("id"))
		replyErr(w, wireReply{}, err)
	case strings.HasPrefix(path, "blobs/") && n.repair != nil:
		n.repair.serveBlob(w, r, strings.TrimPrefix(path, "blobs/"))
	default:
		writeWire(w, http.StatusNotFound, wireReply{Error: &wireError{Code: codeInternal, Message: "no such internal endpoint"}})
	}
}

func (n *Node) serveApply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxCommandSize+1))
	if err != nil {
		writeWire(w, http.StatusBadRequest, wireReply{Error: toWire(err)})
		return
	}
	res, err := n.LeaderApply(r.Context(), b)
	replyErr(w, wireReply{Index: res.Index, Error: toWire(res.Rejected)}, err)
}

// replyErr writes rep, or err as the failure of the request.
func replyErr(w http.ResponseWriter, rep wireReply, err error) {
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrNotLeader):
			status = http.StatusMisdirectedRequest
		case errors.Is(err, ErrUnsafe):
			status = http.StatusConflict
		case errors.Is(err, ErrClosed), errors.Is(err, ErrNoLeader):
			status = http.StatusServiceUnavailable
		}
		writeWire(w, status, wireReply{Error: toWire(err)})
		return
	}
	writeWire(w, http.StatusOK, rep)
}

func writeWire(w http.ResponseWriter, status int, rep wireReply) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rep)
}
