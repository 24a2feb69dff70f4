/* The journal writeback thread's own pattern: a 600-byte record written
 * into a file that is also mapped read-only (as readers map segments),
 * made durable four ways, 2,000 times with 50 µs between them.
 *
 *   gcc -O2 tuning/probes/record_sync.c -o /tmp/record_sync
 *   /tmp/record_sync MODE      (file: /tmp/record_sync_file, 64 MiB)
 *
 * MODE 0: pwrite + msync(MS_SYNC) of its pages (what the journal does);
 * 1: pwritev2(RWF_DSYNC); 2: pwrite + fdatasync; 3: pwrite +
 * sync_file_range (the device write without the cache flush).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){int mode=atoi(v[1]);int N=2000;
 int fd=open("/tmp/record_sync_file",O_RDWR|O_CREAT,0644); fallocate(fd,0,0,64<<20);
 {char*z=calloc(1,1<<20);for(int i=0;i<64;i++)pwrite(fd,z,1<<20,(off_t)i<<20);fsync(fd);}
 char*m=mmap(0,64<<20,PROT_READ,MAP_SHARED,fd,0);
 char buf[600];memset(buf,7,600);double*lat=malloc(N*sizeof(double));off_t off=4096;
 for(int i=0;i<N;i++){double t=now();
  if(mode==0){pwrite(fd,buf,600,off);off_t a=off&~4095;msync(m+a,(off+600)-a,MS_SYNC);}
  else if(mode==1){struct iovec iv={buf,600};pwritev2(fd,&iv,1,off,RWF_DSYNC);}
  else if(mode==2){pwrite(fd,buf,600,off);fdatasync(fd);}
  else if(mode==3){pwrite(fd,buf,600,off);sync_file_range(fd,off&~4095,4096*2,SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER);}
  lat[i]=now()-t; off+=600; usleep(50);}
 qsort(lat,N,sizeof(double),cmp);
 printf("mode %d: p50 %.0f p90 %.0f p99 %.0f us\n",mode,lat[N/2],lat[N*9/10],lat[N*99/100]);}
