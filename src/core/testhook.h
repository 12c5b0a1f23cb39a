/*
 * testhook.h - fault injection points for the crash tests.
 *
 * kp_testhook_point(name) marks a place where a test may want the process
 * to die as under kill -9 (e.g. "after_reserve": inside the admission
 * transaction, after the credits were reserved and before the rows exist).
 *
 * Safety: the point does something only in a binary built with
 * -DKOUMPA_TEST_HOOKS (the Makefile's build/koumpa-hooks, used only by the
 * integration tests). There, when KOUMPA_TEST_FAULT equals the point's name,
 * the process raises SIGKILL; with KOUMPA_TEST_DELAY="{name}:{ms}" (at most
 * 10 s) the thread pauses there first, which widens a race window on
 * purpose (e.g. "before_project_files", after a project is marked deleting). build/koumpa and every installed binary
 * compile the point to nothing and never read KOUMPA_TEST_FAULT.
 */
#ifndef KP_TESTHOOK_H
#define KP_TESTHOOK_H

void kp_testhook_point(const char *name);

#endif
