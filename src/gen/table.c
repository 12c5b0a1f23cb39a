/*
 * table.c - the running generations of a service, on the loop thread: the
 * list every generation is on from its start to its end (gen_table_add,
 * gen_table_remove), and two hashed indexes over it, by serial (deferred
 * steps) and by version (readers, leases, cancels). With thousands of
 * generations at once, a lookup or an ending must not walk them all.
 * Loop-only, like the generations themselves (see generator.c's top comment).
 */
#include <string.h>

#include "gen/gen_internal.h"

uint64_t gen_key_hash(const char *project_id, int64_t n)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)project_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (h ^ (uint64_t)n) * 1099511628211ULL;
}

static generation **serial_bucket(kp_gen *g, uint64_t serial)
{
    return &g->by_serial[serial % GEN_TABLE_BUCKETS];
}

static generation **key_bucket(kp_gen *g, const char *project_id, int64_t n)
{
    return &g->by_key[gen_key_hash(project_id, n) % GEN_TABLE_BUCKETS];
}

void gen_table_add(kp_gen *g, generation *gen)
{
    gen->prev = NULL;
    gen->next = g->gens;
    if (g->gens)
        g->gens->prev = gen;
    g->gens = gen;
    generation **sb = serial_bucket(g, gen->serial);
    gen->serial_next = *sb;
    *sb = gen;
    generation **kb = key_bucket(g, gen->project_id, gen->n);
    gen->key_next = *kb;
    *kb = gen;
}

void gen_table_remove(kp_gen *g, generation *gen)
{
    if (gen->prev)
        gen->prev->next = gen->next;
    else
        g->gens = gen->next;
    if (gen->next)
        gen->next->prev = gen->prev;
    gen->prev = gen->next = NULL;
    for (generation **pp = serial_bucket(g, gen->serial); *pp; pp = &(*pp)->serial_next)
        if (*pp == gen) {
            *pp = gen->serial_next;
            break;
        }
    for (generation **pp = key_bucket(g, gen->project_id, gen->n); *pp; pp = &(*pp)->key_next)
        if (*pp == gen) {
            *pp = gen->key_next;
            break;
        }
}

generation *gen_find_serial(kp_gen *g, uint64_t serial)
{
    for (generation *gen = *serial_bucket(g, serial); gen; gen = gen->serial_next)
        if (gen->serial == serial)
            return gen;
    return NULL;
}

generation *gen_find(kp_gen *g, const char *project_id, int64_t n)
{
    for (generation *gen = *key_bucket(g, project_id, n); gen; gen = gen->key_next)
        if (gen->n == n && strcmp(gen->project_id, project_id) == 0)
            return gen;
    return NULL;
}
