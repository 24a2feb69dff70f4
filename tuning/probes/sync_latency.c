/* Sync latency of this machine's disk, the patterns a journal can use.
 *
 *   gcc -O2 -pthread tuning/probes/sync_latency.c -o /tmp/sync_latency
 *   /tmp/sync_latency MODE THREADS DIRECT      (file: /tmp/sync_probe_file, 64 MiB)
 *
 * MODE 0: 4 KiB pwrite + fdatasync; 1: 4 KiB pwritev2(RWF_DSYNC);
 * 2: 4 KiB pwrite alone; 3: fdatasync alone (nothing dirty: the cache
 * flush). THREADS: how many do it at once (each its own pages).
 * DIRECT 1: the file opened O_DIRECT. 400 operations per thread; prints
 * p50 / p90 / p99 of each operation and operations per second.
 * BENCHMARKS.md ("Recovery") gives what it measured here.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#include <string.h>
#include <sys/uio.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int mode; int fd; int N=400;
typedef struct {int id; double *lat;} arg;
void* run(void*p){arg*a=p; char*buf; posix_memalign((void**)&buf,4096,4096); memset(buf,a->id+1,4096);
 for(int i=0;i<N;i++){ off_t off=((off_t)(a->id*N+i)%4096)*4096; double t=now();
  if(mode==0){pwrite(fd,buf,4096,off);fdatasync(fd);}
  else if(mode==1){struct iovec v={buf,4096};pwritev2(fd,&v,1,off,RWF_DSYNC);}
  else if(mode==2){pwrite(fd,buf,4096,off);}
  else if(mode==3){fdatasync(fd);}
  a->lat[i]=now()-t;}
 return 0;}
int main(int c,char**v){mode=atoi(v[1]);int th=atoi(v[2]);int direct=atoi(v[3]);
 fd=open("/tmp/sync_probe_file",O_RDWR|O_CREAT|(direct?O_DIRECT:0),0644); fallocate(fd,0,0,64<<20);
 {char*z=calloc(1,1<<20);for(int i=0;i<64;i++)pwrite(fd,z,1<<20,(off_t)i<<20);fsync(fd);}
 pthread_t t[8];arg a[8];double t0=now();
 for(int i=0;i<th;i++){a[i].id=i;a[i].lat=malloc(N*sizeof(double));pthread_create(&t[i],0,run,&a[i]);}
 for(int i=0;i<th;i++)pthread_join(t[i],0);
 double el=now()-t0; double*all=malloc(th*N*sizeof(double));for(int i=0;i<th;i++)memcpy(all+i*N,a[i].lat,N*sizeof(double));
 qsort(all,th*N,sizeof(double),cmp);
 printf("mode %d threads %d direct %d: p50 %.0f p90 %.0f p99 %.0f us; %.0f ops/s\n",mode,th,direct,all[th*N/2],all[th*N*9/10],all[th*N*99/100],th*N/el*1e6);}
