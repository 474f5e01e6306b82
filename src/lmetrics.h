/* lmetrics.h -- luasock.metrics: counters, gauges and histograms that handlers define and update,
 * shown on the --metrics endpoint beside the server's own. */
#ifndef LMETRICS_H
#define LMETRICS_H

#include <lua.h>

/* Sets the metrics table as field "metrics" of the table on top of the stack. */
void lmetrics_open(lua_State *L);

#endif
