/* One Darknet training step, dumped layer by layer (pjreddie/darknet).
 *
 * Build against a CPU build of pjreddie/darknet (make GPU=0 OPENMP=0 OPTS=-O2):
 *   cc -O2 -I$DARKNET/include step_pjreddie.c $DARKNET/libdarknet.a -lm -lpthread -o step_pjreddie
 * Run:
 *   step_pjreddie NET.cfg INIT.weights INPUT.f32 TRUTH.f32 OUTDIR
 * When INIT.weights does not exist, every parameter is set by a counter hash (below, reproduced exactly by
 * tools/darknet_harness/hash_init.py) and saved there first: a start that any machine can rebuild bit for bit
 * without shipping a 35 MB file.
 * INPUT.f32: batch x C x H x W float32 (the network input, already letterboxed); TRUTH.f32: Darknet's truth
 * array (batch x net->truths float32). Writes OUTDIR/{params_before,forward,backward,after_update}/Lxx_NAME.f32,
 * OUTDIR/manifest.txt (file, count), OUTDIR/cost.txt and OUTDIR/after.weights. Darknet's deltas and updates are
 * NEGATIVE gradients. The loops below are network.c's forward_network/backward_network with a dump between
 * layers; update_network is called as it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <math.h>
#include "darknet.h"

static FILE *manifest;
static const char *outdir;

static void dump(const char *phase, int layer, const char *name, const float *x, int n)
{
    char dir[4096], path[4096];
    if (!x || n <= 0) return;
    snprintf(dir, sizeof dir, "%s/%s", outdir, phase);
    mkdir(dir, 0755);
    if (layer >= 0) snprintf(path, sizeof path, "%s/L%02d_%s.f32", dir, layer, name);
    else snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    fprintf(manifest, "%s %d\n", path + strlen(outdir) + 1, n);
}

/* u(layer, array, k) in [-1, 1): murmur3's finaliser over a counter, 24 bits, exact in float32. */
static float hash_uniform(unsigned layer, unsigned array, unsigned k)
{
    unsigned h = layer * 0x9E3779B1u + array * 0x7F4A7C15u + k * 0x85EBCA77u + 0x165667B1u;
    h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    return (float)(h >> 8) / 16777216.0f * 2.0f - 1.0f;
}

/* weights = scale * u with Darknet's scale sqrt(2 / fan_in) (convolutional) or sqrt(2 / inputs) (connected);
 * biases = 0.1 u; scales = 1 + 0.25 u; rolling_mean = 0.1 u; rolling_variance = 1 + 0.5 u. */
static void hash_init(network *net)
{
    int i, k;
    for (i = 0; i < net->n; ++i) {
        layer l = net->layers[i];
        if (l.type != CONVOLUTIONAL && l.type != CONNECTED) continue;
        int nw = l.type == CONVOLUTIONAL ? l.nweights : l.inputs * l.outputs;
        int c = l.type == CONVOLUTIONAL ? l.n : l.outputs;
        float fan = l.type == CONVOLUTIONAL ? (float)(l.size * l.size * l.c / l.groups) : (float)l.inputs;
        float scale = sqrtf(2.0f / fan);
        for (k = 0; k < nw; ++k) l.weights[k] = scale * hash_uniform(i, 0, k);
        for (k = 0; k < c; ++k) l.biases[k] = 0.1f * hash_uniform(i, 1, k);
        if (l.batch_normalize) {
            for (k = 0; k < c; ++k) {
                l.scales[k] = 1.0f + 0.25f * hash_uniform(i, 2, k);
                l.rolling_mean[k] = 0.1f * hash_uniform(i, 3, k);
                l.rolling_variance[k] = 1.0f + 0.5f * hash_uniform(i, 4, k);
            }
        }
    }
}

static void read_floats(const char *path, float *x, int n)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    if (fread(x, sizeof(float), n, f) != (size_t)n) { fprintf(stderr, "%s: expected %d floats\n", path, n); exit(2); }
    fclose(f);
}

static void dump_params(const char *phase, network *net)
{
    int i;
    for (i = 0; i < net->n; ++i) {
        layer l = net->layers[i];
        if (l.type == CONVOLUTIONAL || l.type == CONNECTED) {
            dump(phase, i, "weights", l.weights, l.nweights ? l.nweights : l.inputs * l.outputs);
            dump(phase, i, "biases", l.biases, l.n ? l.n : l.outputs);
            if (l.batch_normalize) {
                int c = l.type == CONVOLUTIONAL ? l.n : l.outputs;
                dump(phase, i, "scales", l.scales, c);
                dump(phase, i, "rolling_mean", l.rolling_mean, c);
                dump(phase, i, "rolling_variance", l.rolling_variance, c);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s NET.cfg INIT.weights INPUT.f32 TRUTH.f32 OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[5];
    mkdir(outdir, 0755);
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.txt", outdir);
    manifest = fopen(mpath, "w");
    network *net = parse_network_cfg(argv[1]);
    FILE *init = fopen(argv[2], "rb");
    if (init) { fclose(init); load_weights(net, argv[2]); }
    else { hash_init(net); save_weights(net, argv[2]); }
    read_floats(argv[3], net->input, net->inputs * net->batch);
    if (net->truths) read_floats(argv[4], net->truth, net->truths * net->batch);
    dump_params("params_before", net);

    *net->seen += net->batch;
    net->train = 1;
    /* forward_network */
    network fw = *net;
    int i;
    for (i = 0; i < fw.n; ++i) {
        fw.index = i;
        layer l = fw.layers[i];
        if (l.delta) fill_cpu(l.outputs * l.batch, 0, l.delta, 1);
        l.forward(l, fw);
        fw.input = l.output;
        if (l.truth) fw.truth = l.output;
        dump("forward", i, "output", l.output, l.outputs * l.batch);
        if (l.batch_normalize) {
            int c = l.type == CONVOLUTIONAL ? l.n : l.outputs;
            dump("forward", i, "bn_mean", l.mean, c);
            dump("forward", i, "bn_variance", l.variance, c);
            dump("forward", i, "rolling_mean", l.rolling_mean, c);
            dump("forward", i, "rolling_variance", l.rolling_variance, c);
        }
        if (l.cost) {
            dump("forward", i, "delta_after_forward", l.delta, l.outputs * l.batch);
        }
    }
    /* calc_network_cost */
    float sum = 0; int count = 0;
    FILE *cf;
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/cost.txt", outdir);
    cf = fopen(cpath, "w");
    for (i = 0; i < net->n; ++i) {
        if (net->layers[i].cost) {
            sum += net->layers[i].cost[0];
            ++count;
            fprintf(cf, "layer %d cost %.9g\n", i, net->layers[i].cost[0]);
        }
    }
    *net->cost = sum / count;
    /* backward_network */
    network orig = *net, bw = *net;
    for (i = bw.n - 1; i >= 0; --i) {
        layer l = bw.layers[i];
        if (l.stopbackward) break;
        if (i == 0) bw = orig;
        else { layer prev = bw.layers[i - 1]; bw.input = prev.output; bw.delta = prev.delta; }
        bw.index = i;
        dump("backward", i, "delta_in", l.delta, l.outputs * l.batch);
        l.backward(l, bw);
        dump("backward", i, "delta", l.delta, l.outputs * l.batch);
        if (l.type == CONVOLUTIONAL || l.type == CONNECTED) {
            dump("backward", i, "weight_updates", l.weight_updates, l.nweights ? l.nweights : l.inputs * l.outputs);
            dump("backward", i, "bias_updates", l.bias_updates, l.n ? l.n : l.outputs);
            if (l.batch_normalize) {
                int c = l.type == CONVOLUTIONAL ? l.n : l.outputs;
                dump("backward", i, "scale_updates", l.scale_updates, c);
            }
        }
    }
    float error = *net->cost;
    if (((*net->seen) / net->batch) % net->subdivisions == 0) update_network(net);
    fprintf(cf, "net cost %.9g\nreported loss %.9g\n", error, error / net->batch);
    fclose(cf);
    dump_params("after_update", net);
    for (i = 0; i < net->n; ++i) {
        layer l = net->layers[i];
        if (l.type == CONVOLUTIONAL || l.type == CONNECTED) {
            dump("after_update", i, "weight_updates", l.weight_updates, l.nweights ? l.nweights : l.inputs * l.outputs);
            dump("after_update", i, "bias_updates", l.bias_updates, l.n ? l.n : l.outputs);
        }
    }
    char wpath[4096];
    snprintf(wpath, sizeof wpath, "%s/after.weights", outdir);
    save_weights(net, wpath);
    fclose(manifest);
    return 0;
}
