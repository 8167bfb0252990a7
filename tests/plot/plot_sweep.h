/*
 * The sweep the plot integration tests draw: a database in the test's scratch directory with a
 * dataset of random games and a real sweep of the bundled model (models/chess-tiny) run by
 * `chesslens run`, with every analysis a figure reads.
 */
#ifndef CHESSLENS_TESTS_PLOT_SWEEP_H
#define CHESSLENS_TESTS_PLOT_SWEEP_H

/* The sweep's name in the database. Its analyses: 0 block_every at cut-offs 20 and 26, every
 * legal alternative of the last token (normalised logit_diff); 1 attn_head_out_by_pos at 20, a
 * random legal alternative (logprob); 2 resid_pre at 20 corrupted with game 5; 3 legal_stats;
 * 4 neuron_stats; 5 predictions (top 3). Games 0..3 of dataset "g". */
#define PLOT_SWEEP "plots"
/* A second sweep of the same dataset with predictions only (figures that lack data). */
#define PLOT_SWEEP_BARE "bare"

/* Creates the database once per process (generating games and running both sweeps) and
 * returns its path (static). Fails the test when a command fails. */
const char *plot_sweep_db(void);

#endif
