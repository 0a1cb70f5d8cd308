//! Synced writes on a thread of their own. A persist or a block commit waits for the disk
//! (fsync); on the async workers that wait would stall the API and the network task with it. The
//! driver hands each write to this thread and awaits it, so its order is unchanged (nothing after
//! a write is performed before the write is durable) while the workers keep serving.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::DriverError;

/// A write to perform, returning what it wrote.
pub type Job<T> = Box<dyn FnOnce() -> Result<T, DriverError> + Send>;

type Task = Box<dyn FnOnce() + Send>;

/// The writer thread of one driver.
#[derive(Debug)]
pub struct Writer {
    tasks: mpsc::Sender<Task>,
}

impl Writer {
    /// Starts the thread; it ends when the writer is dropped.
    pub fn spawn() -> Writer {
        let (tasks, rx) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("medchain-writer".into())
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    task();
                }
            })
            .expect("spawning the writer thread");
        Writer { tasks }
    }

    /// Performs `job` on the writer thread and waits for it.
    pub async fn write<T: Send + 'static>(&self, job: Job<T>) -> Result<T, DriverError> {
        let (done, result) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = done.send(job());
        });
        let stopped = || DriverError::Storage("the writer thread stopped".into());
        self.tasks.send(task).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_run_in_order_and_report_their_errors() {
        let w = Writer::spawn();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            w.write(Box::new(move || {
                log.lock().unwrap().push(i);
                Ok(())
            }))
            .await
            .unwrap();
        }
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
        let failed = w
            .write::<()>(Box::new(|| Err(DriverError::Storage("disk full".into()))))
            .await;
        assert!(matches!(failed, Err(DriverError::Storage(m)) if m == "disk full"));
        let panicked = w.write::<()>(Box::new(|| panic!("a bug in a write"))).await;
        assert!(
            panicked.is_err(),
            "a write that panics is an error, not a hang"
        );
    }
}
