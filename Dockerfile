# berth in a scratch image: the static binary that `make build` produced
# (CGO_ENABLED=0), an empty /data for the unprivileged user, and /tmp.
# Nothing is compiled here, so the build needs no base image to pull:
# `make image` builds bin/berth on the host, prepares the two empty
# directories under bin/image/ (with their modes) and runs `docker build`;
# .dockerignore lets nothing else into the context.
FROM scratch

COPY bin/berth /berth
# A named volume mounted at /data copies this directory's owner and mode
# (0700) on first use, so the unprivileged user can write to it.
COPY --chown=65532:65532 bin/image/data/ /data/
COPY bin/image/tmp/ /tmp/

# 65532 is the "nonroot" id of distroless images; scratch has no
# /etc/passwd, so the id is numeric.
USER 65532:65532
ENV BERTH_DATA=/data
VOLUME ["/data"]
# HTTP (OCI API, management API, metrics, health), Raft, gossip (TCP+UDP).
EXPOSE 5000 5001 5002 5002/udp
ENTRYPOINT ["/berth"]
CMD ["serve"]
