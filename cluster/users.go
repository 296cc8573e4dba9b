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

// dummyHash is what a password for an unknown user is compared with.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("berth"), bcryptCost)
	return h
})

// passwordOK compares password with u's hash. An unknown user (found
// false) costs a comparison too, so timing does not tell which users
// exist.
func passwordOK(u user, found bool, password string) bool {
	if !found {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) == nil
}

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
	if !passwordOK(u, found, password) {
		return false, false, nil
	}
	return true, u.Admin, nil
}
