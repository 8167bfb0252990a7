/*
 * powerloss_vfs.h: an SQLite VFS for tests that simulates a power loss.
 *
 * It passes every call to the default VFS (the OS's), and remembers for each file it opened
 * what a disk would hold if the power went now: the file's bytes at its last xSync, plus the
 * writes and truncations since then, in order, which a disk may or may not have persisted.
 * powerloss_cut then plays the power going out: from that moment every write, sync,
 * truncation and delete through the VFS is ignored (so closing the connections the "machine"
 * had open changes nothing), and powerloss_restore rewrites each file as the disk would hold
 * it: its synced bytes with each later write or truncation kept, in order, with probability
 * keep (0: nothing unsynced survives; 1: everything does, as after a crash of the process
 * only). The shared-memory index (-shm) is removed, as memory does not survive. The next
 * connection opened sees the disk after the power came back.
 *
 * One test process, one thread; files are tracked by path, so several connections to one
 * database share their history. Allocation failures abort the test.
 */
#ifndef CHESSLENS_TESTS_COORDINATOR_POWERLOSS_VFS_H
#define CHESSLENS_TESTS_COORDINATOR_POWERLOSS_VFS_H

#include <stdint.h>

/* Registers the VFS as SQLite's default (once; later calls do nothing). */
void powerloss_install(void);
/* The power goes out: nothing written through the VFS from now on reaches a file. */
void powerloss_cut(void);
/* The power comes back: every tracked file is rewritten as the disk would hold it (see above;
 * seed picks which unsynced operations survive), its history is forgotten, and the VFS passes
 * writes through again. */
void powerloss_restore(uint64_t seed, double keep);
/* Syncs seen since installation (all files), for tests that check a sync happened. */
uint64_t powerloss_syncs(void);

#endif
