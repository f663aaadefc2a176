"""Xen front-end drivers run from userspace through Linux's Xen device files.

- `ring`: io/ring.h's shared rings, sans-IO, over a granted page;
- `netif`, `blkif`: the netfront and blkfront data paths over those rings;
- `xenstore`: the xenstore protocol, sans-IO, and a client over /dev/xen/xenbus;
- `evtchn`: event channels through /dev/xen/evtchn;
- `gntalloc`: pages granted to another domain through /dev/xen/gntalloc;
- `netfront` (a Netif), `blkfront` (a BlockDevice): the drivers putting these together, and
  `frontend`, what their bring-up and tear-down share.
"""
