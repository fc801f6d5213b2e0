"""A real one-node Slurm cluster on localhost, for the tests of what the project claims under Slurm.

Debian's `slurm-wlm` and `munge` (installed by .ci/run) provide the daemons; `LocalSlurm` starts
munged, slurmctld and slurmd directly (no systemd), with their key, state, spool, logs and sockets in a
folder of their own, and stops them by PID. It needs root (the daemons run as root, and jobs run as the
submitting user). Jobs inherit the submitting environment (sbatch's default), so they run the test's
Python with `SLURM_CONF` pointing at this cluster.
"""
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'scontrol', 'scancel', 'sinfo')
ENDED = ('COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'PREEMPTED', 'BOOT_FAIL',
         'DEADLINE')


def missing_requirements() -> Optional[str]:
    """Why a local cluster cannot run here, or None."""
    absent = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge, "
                "as .ci/run does")
    if os.geteuid() != 0:
        return 'the local Slurm cluster runs its daemons as root'
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class LocalSlurm:
    """munged + slurmctld + slurmd on localhost, one node with every core of this machine.

    Settings the tests rely on: proctrack/linuxproc and task/none (no cgroups in a container),
    select/cons_tres by core, JobRequeue=1, finished jobs kept in slurmctld for 10 minutes (MinJobAge)
    so that their state can be read without accounting, and job completions logged to a text file.
    """

    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, 'slurm.conf')
        self.processes: Dict[str, subprocess.Popen] = {}
        self.node = socket.gethostname().split('.')[0]
        self.cpus = os.cpu_count() or 1

    # ------------------------------------------------------------------ lifetime

    def start(self, timeout: float = 60) -> 'LocalSlurm':
        for folder in ('munge', 'state', 'spool', 'log'):
            os.makedirs(os.path.join(self.root, folder), mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged refuses keys and sockets under group- or world-writable folders
        key = os.path.join(self.root, 'munge', 'munge.key')
        with open(key, 'wb') as file:
            file.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.socket = os.path.join(self.root, 'munge', 'munge.sock')
        self._spawn('munged', ['munged', '--foreground', '--force', f'--key-file={key}', f'--socket={self.socket}',
                               f"--pid-file={os.path.join(self.root, 'munge', 'munged.pid')}",
                               f"--seed-file={os.path.join(self.root, 'munge', 'munged.seed')}",
                               f"--log-file={os.path.join(self.root, 'log', 'munged.log')}"])
        self._wait(lambda: os.path.exists(self.socket), timeout, 'munged to open its socket')
        with open(self.conf, 'w') as file:
            file.write(self.configuration())
        self._spawn('slurmctld', ['slurmctld', '-D', '-f', self.conf])
        self._spawn('slurmd', ['slurmd', '-D', '-f', self.conf])
        self._wait(self._node_ready, timeout, 'the node to come up')
        return self

    def configuration(self) -> str:
        path = lambda *parts: os.path.join(self.root, *parts)  # noqa: E731
        return '\n'.join([
            'ClusterName=bgmtest',
            f'SlurmctldHost={self.node}(127.0.0.1)',
            f'SlurmctldPort={free_port()}',
            f'SlurmdPort={free_port()}',
            'AuthType=auth/munge',
            f'AuthInfo=socket={self.socket}',
            'CredType=cred/munge',
            'SlurmUser=root',
            'SlurmdUser=root',
            f"StateSaveLocation={path('state')}",
            f"SlurmdSpoolDir={path('spool')}",
            f"SlurmctldPidFile={path('slurmctld.pid')}",
            f"SlurmdPidFile={path('slurmd.pid')}",
            f"SlurmctldLogFile={path('log', 'slurmctld.log')}",
            f"SlurmdLogFile={path('log', 'slurmd.log')}",
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_Core',
            'JobRequeue=1',
            'MpiDefault=none',
            'ReturnToService=2',
            'MinJobAge=600',
            # Schedule every second, not every minute: a job waiting for the cores of the one before
            # starts as soon as they are free.
            'SchedulerParameters=sched_interval=1,sched_min_interval=100000',
            'SchedulerType=sched/builtin',
            'KillWait=30',
            'JobCompType=jobcomp/filetxt',
            f"JobCompLoc={path('jobcomp.txt')}",
            'InactiveLimit=0',
            f'NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN',
            'PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
            '',
        ])

    def stop(self) -> None:
        """Cancels every job, then stops the daemons by their PIDs (slurmd first)."""
        if 'slurmctld' in self.processes:
            subprocess.run(['scancel', '--full', '--user', str(os.getuid())], env=self.env(), capture_output=True,
                           timeout=30)
        for name in ('slurmd', 'slurmctld', 'munged'):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Job steps slurmd left behind (slurmstepd and its tasks) end with it; reap what remains.
        subprocess.run(['pkill', '-f', f'slurmstepd.*{re.escape(self.root)}'], capture_output=True)

    def _spawn(self, name: str, command: List[str]) -> None:
        log = open(os.path.join(self.root, 'log', f'{name}.out'), 'wb')
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                                start_new_session=True)
        log.close()

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f'{name} exited ({process.returncode}) while waiting for {what}:\n'
                                       + self.logs())
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f'timed out waiting for {what}:\n' + self.logs())

    def _node_ready(self) -> bool:
        return self._node_state() in ('idle', 'mix', 'alloc')

    def logs(self) -> str:
        text = []
        for name in sorted(os.listdir(os.path.join(self.root, 'log'))):
            with open(os.path.join(self.root, 'log', name), errors='replace') as file:
                text.append(f'--- {name}\n' + ''.join(file.readlines()[-15:]))
        return '\n'.join(text)

    def job_log(self, job_id: int) -> str:
        """What slurmctld and slurmd logged about one job (for the message of a failed assertion)."""
        pattern = re.compile(rf'(JobId={job_id}\b|job[ _]?id[ =]?{job_id}\b|\b{job_id}\.(batch|extern|\d+)\b|'
                             rf'\[{job_id}\.|job {job_id}\b)', re.IGNORECASE)
        lines = []
        for name in ('slurmctld.log', 'slurmd.log'):
            path = os.path.join(self.root, 'log', name)
            if os.path.exists(path):
                with open(path, errors='replace') as file:
                    lines += [f'{name}: {line.rstrip()}' for line in file if pattern.search(line)]
        return '\n'.join(lines[-60:])

    # ------------------------------------------------------------------ jobs

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """The environment of the clients and of the jobs: this cluster's configuration."""
        return {**os.environ, 'SLURM_CONF': self.conf, **(extra or {})}

    def sbatch(self, script: str, *arguments: str, options: Sequence[str] = (), cwd: Optional[str] = None,
               env: Optional[Dict[str, str]] = None) -> int:
        """Submits `script` with sbatch `options` and script `arguments`; returns the job id."""
        result = subprocess.run(['sbatch', '--parsable', *options, script, *arguments], cwd=cwd,
                                env=self.env(env), capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f'sbatch failed: {result.stderr}')
        return int(result.stdout.strip().split(';')[0])

    def jobs(self, job_id: int) -> List[Dict[str, str]]:
        """`scontrol show job` of a job (one entry per task for an array), as {field: value}."""
        result = subprocess.run(['scontrol', 'show', 'job', '--oneliner', str(job_id)], env=self.env(),
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f'scontrol show job {job_id}: {result.stderr}')
        return [dict(re.findall(r'(\w+)=(\S*)', line)) for line in result.stdout.splitlines() if line.strip()]

    def job(self, job_id: int) -> Dict[str, str]:
        return self.jobs(job_id)[0]

    def wait(self, job_id: int, condition: Callable[[Dict[str, str]], bool], timeout: float, what: str
             ) -> Dict[str, str]:
        """Polls the job until `condition(job)` holds; returns the job's fields then."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if condition(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f'job {job_id}: timed out waiting for {what}; now {job}')
            time.sleep(0.3)

    def wait_ended(self, job_id: int, timeout: float) -> Dict[str, str]:
        return self.wait(job_id, lambda job: job['JobState'] in ENDED, timeout, 'its end')

    def wait_all_ended(self, job_id: int, timeout: float) -> List[Dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            if all(job['JobState'] in ENDED for job in jobs):
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(f'job array {job_id}: timed out; now {[j["JobState"] for j in jobs]}')
            time.sleep(0.3)

    def signal(self, job_id: int, name: str, batch_only: bool = False) -> None:
        """`scancel --signal NAME`: to every step of the job (its tasks), or only to the batch shell."""
        subprocess.run(['scancel', f'--signal={name}', *(['--batch'] if batch_only else []), str(job_id)],
                       env=self.env(), check=True, capture_output=True, timeout=30)

    def cancel(self, job_id: int) -> None:
        """A user's `scancel JOB`."""
        subprocess.run(['scancel', str(job_id)], env=self.env(), check=True, capture_output=True, timeout=30)

    def start_now(self, job_id: int, timeout: float = 60) -> None:
        """Slurm holds a requeued job for two minutes (its begin time); the tests do not wait that long.

        The hold is lifted once the requeue is complete: the job pending for its begin time and the
        node idle again (the run that was requeued has ended). Earlier, Slurm either refuses the update
        or sets the hold again as the requeue completes."""
        self.wait(job_id, lambda job: job['JobState'] == 'PENDING' and job.get('Reason') == 'BeginTime', timeout,
                  'the requeue to complete')
        # Every step of the requeued run, the batch script's included, must have ended: an old batch step
        # ending after the new run started would end the new run with its own exit status.
        self._wait(lambda: not self._steps_running(job_id), timeout, 'the requeued run to end')
        # slurmd revoked the old run's credential; it refuses a new one created within the same second
        # (whole seconds are compared), and the job then fails with "Job credential revoked".
        time.sleep(max(0.0, math.floor(time.time()) + 2 - time.time()))
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(['scontrol', 'update', f'JobId={job_id}', 'StartTime=now'], env=self.env(),
                                    capture_output=True, text=True, timeout=30)
            job = self.job(job_id)
            if result.returncode == 0 and job.get('Reason') != 'BeginTime':
                return
            if time.monotonic() > deadline:
                raise AssertionError(f'job {job_id}: its requeue hold could not be lifted ({result.stderr.strip()}); '
                                     f'now {job}')
            time.sleep(0.5)

    @staticmethod
    def _steps_running(job_id: int) -> bool:
        """Whether a slurmstepd of the job (its batch script or a step) still runs on this machine."""
        return subprocess.run(['pgrep', '-f', rf'slurmstepd.*\[{job_id}\.'], capture_output=True).returncode == 0

    def _node_state(self) -> str:
        result = subprocess.run(['sinfo', '--noheader', '--format=%t'], env=self.env(), capture_output=True,
                                text=True)
        return result.stdout.strip()

    def completions(self) -> List[Dict[str, str]]:
        """The job completion log (jobcomp/filetxt): one {field: value} per finished job run."""
        path = os.path.join(self.root, 'jobcomp.txt')
        if not os.path.exists(path):
            return []
        with open(path) as file:
            return [dict(re.findall(r'(\w+)=(\S*)', line)) for line in file if line.strip()]


def read_output(path: str) -> str:
    try:
        with open(path, errors='replace') as file:
            return file.read()
    except FileNotFoundError:
        return ''


def find_lines(text: str, pattern: str) -> Iterable[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]
