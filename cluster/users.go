package cluster

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is the cost of stored password hashes.
const bcryptCost = 10

// EnsureUser creates user name with password, or updates it when the
// password does not match the stored hash or admin differs. It reports
// whether it changed anything; "unchanged" is confirmed with the leader
// (a node that cannot reach one fails, unavailable). The hash is computed
// here, by the proposer, never in apply.
func (n *Node) EnsureUser(ctx context.Context, name, password string, admin bool) (changed bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	u, found, err := n.fsm.user(name)
	if err != nil {
		return false, err
	}
	if found && u.Admin == admin && bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) == nil {
		// This node's state may lag the cluster's (a follower cut off):
		// only a match that holds once caught up with the leader means
		// there is nothing to change.
		if err := n.catchUp(ctx); err != nil {
			return false, fmt.Errorf("ensure user %s: %w", name, err)
		}
		now, found, err := n.fsm.user(name)
		if err != nil {
			return false, err
		}
		if found && now.Admin == admin && bytes.Equal(now.Hash, u.Hash) {
			return false, nil
		}
	}
	hash, err := hashPassword(name, password)
	if err != nil {
		return false, err
	}
	if err := n.propose(ctx, command{Op: opPutUser, Name: name, Hash: hash, Admin: admin}); err != nil {
		return false, err
	}
	return true, nil
}

// UserExists reports whether user name exists.
func (n *Node) UserExists(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	_, found, err := n.fsm.user(name)
	return found, err
}

var (
	dummyHashOnce sync.Once
	dummyHash     []byte
)

// CheckPassword verifies password against user's stored hash. An unknown
// user costs a hash comparison too, so timing does not tell which users
// exist. Callers cache successes: each call costs a bcrypt comparison.
func (n *Node) CheckPassword(ctx context.Context, user, password string) (ok bool, admin bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, false, err
	}
	u, found, err := n.fsm.user(user)
	if err != nil {
		return false, false, err
	}
	if !found {
		dummyHashOnce.Do(func() {
			dummyHash, _ = bcrypt.GenerateFromPassword([]byte("berth"), bcryptCost)
		})
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false, false, nil
	}
	if bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) != nil {
		return false, false, nil
	}
	return true, u.Admin, nil
}
